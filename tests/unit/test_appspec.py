# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AppSpec parsing and validation: a corpus of valid and invalid files, AWS's published samples."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import appspec as A
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import (
    RESERVED_EVENTS,
    SCRIPTABLE_EVENTS,
    AppSpec,
    AppSpecError,
    check_bundle_consistency,
    parse_appspec,
    parse_lambda_appspec,
    validate_appspec_data,
)


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


HEAD = "version: 0.0\nos: linux\n"

# ---------------------------------------------------------------------------------------------
# AWS's published samples (CodeDeploy User Guide), written from the documentation
# ---------------------------------------------------------------------------------------------

WORDPRESS = y("""
    version: 0.0
    os: linux
    files:
      - source: /
        destination: /var/www/html/WordPress
    hooks:
      BeforeInstall:
        - location: scripts/install_dependencies.sh
          timeout: 300
          runas: root
      AfterInstall:
        - location: scripts/change_permissions.sh
          timeout: 300
          runas: root
      ApplicationStart:
        - location: scripts/start_server.sh
        - location: scripts/create_test_db.sh
          timeout: 300
          runas: root
      ApplicationStop:
        - location: scripts/stop_server.sh
          timeout: 300
          runas: root
""")

SAMPLE_APP_LINUX = y("""
    version: 0.0
    os: linux
    files:
      - source: /index.html
        destination: /var/www/html/
    hooks:
      BeforeInstall:
        - location: scripts/install_dependencies
          timeout: 300
          runas: root
        - location: scripts/start_server
          timeout: 300
          runas: root
      ApplicationStop:
        - location: scripts/stop_server
          timeout: 300
          runas: root
""")

REFERENCE_EXAMPLE = y("""
    version: 0.0
    os: linux
    files:
      - source: Config/config.txt
        destination: /webapps/Config
      - source: source
        destination: /webapps/myApp
    hooks:
      BeforeInstall:
        - location: Scripts/UnzipResourceBundle.sh
        - location: Scripts/UnzipDataBundle.sh
      AfterInstall:
        - location: Scripts/RunResourceTests.sh
          timeout: 180
      ApplicationStart:
        - location: Scripts/RunFunctionalTests.sh
          timeout: 3600
      ValidateService:
        - location: Scripts/MonitorService.sh
          timeout: 3600
          runas: codedeployuser
""")

PERMISSIONS_EXAMPLE = y("""
    version: 0.0
    os: linux
    files:
      - source: my-app
        destination: /tmp/my-app
      - source: WordPress
        destination: /var/www/html/WordPress
    permissions:
      - object: /tmp/my-app
        pattern: "*.txt"
        except: [/tmp/my-app/my-file-1.txt]
        owner: tomcat
        group: tomcat
        mode: 4755
        type:
          - file
      - object: /var/www/html/WordPress
        pattern: "**"
        acls:
          - u:ec2-user:rw
        context:
          user: unconfined_u
          type: httpd_sys_content_t
          range: s0
        type:
          - file
""")

LAMBDA_SAMPLE = y("""
    version: 0.0
    Resources:
      - myLambdaFunction:
          Type: AWS::Lambda::Function
          Properties:
            Name: "myLambdaFunction"
            Alias: "myLambdaFunctionAlias"
            CurrentVersion: "1"
            TargetVersion: "2"
    Hooks:
      - BeforeAllowTraffic: "LambdaFunctionToValidateBeforeTrafficShift"
      - AfterAllowTraffic: "LambdaFunctionToValidateAfterTrafficShift"
""")


def test_wordpress_sample():
    spec = parse_appspec(WORDPRESS)
    assert spec.files[0].destination == "/var/www/html/WordPress"
    assert [s.location for s in spec.hooks["ApplicationStart"]] == ["scripts/start_server.sh", "scripts/create_test_db.sh"]
    assert spec.hooks["ApplicationStart"][0].timeout == 3600 and spec.hooks["ApplicationStart"][0].runas is None
    assert spec.hooks["ApplicationStart"][1].timeout == 300 and spec.hooks["ApplicationStart"][1].runas == "root"


def test_sample_app_linux():
    spec = parse_appspec(SAMPLE_APP_LINUX)
    assert spec.to_dict()["files"] == [{"source": "/index.html", "destination": "/var/www/html/"}]
    assert list(spec.hooks) == ["BeforeInstall", "ApplicationStop"]


def test_reference_example():
    spec = parse_appspec(REFERENCE_EXAMPLE)
    assert spec.hooks["ValidateService"][0].runas == "codedeployuser"
    assert spec.hooks["AfterInstall"][0].timeout == 180


def test_permissions_example_normalised():
    d = parse_appspec(PERMISSIONS_EXAMPLE).to_dict()
    assert d["permissions"][0] == {
        "object": "/tmp/my-app", "pattern": "*.txt", "except": ["/tmp/my-app/my-file-1.txt"], "owner": "tomcat",
        "group": "tomcat", "mode": "4755", "acls": [], "context": None, "type": ["file"],
    }
    assert d["permissions"][1]["context"] == {"user": "unconfined_u", "type": "httpd_sys_content_t", "range": "s0"}
    assert d["permissions"][1]["acls"] == ["u:ec2-user:rw"]


def test_normalised_shape_matches_architecture_contract():
    d = parse_appspec(HEAD + y("""
        files: [{source: app/, destination: /opt/app}]
        permissions:
          - object: /opt/app
            owner: app
    """)).to_dict()
    assert d == {
        "version": "0.0", "os": "linux",
        "files": [{"source": "app/", "destination": "/opt/app"}],
        "file_exists_behavior": None,
        "permissions": [{"object": "/opt/app", "pattern": "**", "except": [], "owner": "app", "group": None, "mode": None,
                         "acls": [], "context": None, "type": ["file", "directory"]}],
        "hooks": {},
    }
    json.dumps(d)  # plain JSON types only


def test_round_trip_through_json_and_from_dict():
    for text in (WORDPRESS, SAMPLE_APP_LINUX, REFERENCE_EXAMPLE, PERMISSIONS_EXAMPLE):
        d = parse_appspec(text).to_dict()
        again = AppSpec.from_dict(json.loads(json.dumps(d)))
        assert again.to_dict() == d


def test_from_dict_rejects_invalid_data():
    d = parse_appspec(WORDPRESS).to_dict()
    d["hooks"]["Install"] = [{"location": "x.sh", "timeout": 1, "runas": None}]
    with pytest.raises(AppSpecError) as exc:
        AppSpec.from_dict(d)
    assert "hooks.Install" in str(exc.value)


def test_from_dict_needs_no_yaml():
    """Hosts have no PyYAML: importing the module and from_dict must work with yaml unimportable."""
    d = json.dumps(parse_appspec(WORDPRESS).to_dict())
    code = textwrap.dedent(f"""
        import sys, json
        sys.modules['yaml'] = None  # any 'import yaml' now raises ImportError
        sys.path[:0] = ['build', '.']
        from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import AppSpec
        spec = AppSpec.from_dict(json.loads({d!r}))
        print(spec.hooks['ApplicationStop'][0].location)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scripts/stop_server.sh"


def test_lambda_sample():
    spec = parse_lambda_appspec(LAMBDA_SAMPLE)
    assert spec.to_dict() == {
        "version": "0.0",
        "function": {"logical_id": "myLambdaFunction", "name": "myLambdaFunction", "alias": "myLambdaFunctionAlias",
                     "current_version": "1", "target_version": "2"},
        "hooks": {"BeforeAllowTraffic": "LambdaFunctionToValidateBeforeTrafficShift",
                  "AfterAllowTraffic": "LambdaFunctionToValidateAfterTrafficShift"},
    }
    assert A.LambdaAppSpec.from_dict(spec.to_dict()) == spec


def test_lambda_from_loaded_data_and_json_text():
    data = {"version": 0.0, "Resources": [{"fn": {"Type": "AWS::Lambda::Function", "Properties": {
        "Name": "f", "Alias": "live", "CurrentVersion": 3, "TargetVersion": 4}}}]}
    spec = parse_lambda_appspec(data)
    assert (spec.current_version, spec.target_version, spec.hooks) == ("3", "4", {})
    assert parse_lambda_appspec(json.dumps(data)).target_version == "4"


def test_constants():
    assert len(SCRIPTABLE_EVENTS) == 9 and "ValidateService" in SCRIPTABLE_EVENTS
    assert set(RESERVED_EVENTS) == {"BlockTraffic", "DownloadBundle", "Install", "AllowTraffic"}
    assert not set(SCRIPTABLE_EVENTS) & set(RESERVED_EVENTS)


# ---------------------------------------------------------------------------------------------
# Valid corpus: edge cases that must be accepted, with what they normalise to
# ---------------------------------------------------------------------------------------------

VALID = [
    ("version as float", HEAD, lambda d: d["version"] == "0.0"),
    ("version as string", "version: '0.0'\nos: linux\n", lambda d: d["version"] == "0.0"),
    ("minimal has empty sections", HEAD, lambda d: d["files"] == [] and d["permissions"] == [] and d["hooks"] == {}),
    ("file_exists_behavior absent is null", HEAD, lambda d: d["file_exists_behavior"] is None),
    ("file_exists_behavior case-insensitive", HEAD + "file_exists_behavior: overwrite\n",
     lambda d: d["file_exists_behavior"] == "OVERWRITE"),
    ("file_exists_behavior RETAIN", HEAD + "file_exists_behavior: RETAIN\n", lambda d: d["file_exists_behavior"] == "RETAIN"),
    ("octal mode keeps its spelling", HEAD + "permissions: [{object: /opt/a, mode: 0644}]\n",
     lambda d: d["permissions"][0]["mode"] == "0644"),
    ("3-digit mode padded", HEAD + "permissions: [{object: /opt/a, mode: 755}]\n", lambda d: d["permissions"][0]["mode"] == "0755"),
    ("string mode", HEAD + "permissions: [{object: /opt/a, mode: '2775'}]\n", lambda d: d["permissions"][0]["mode"] == "2775"),
    ("numeric owner becomes string", HEAD + "permissions: [{object: /opt/a, owner: 1000, group: 1000}]\n",
     lambda d: (d["permissions"][0]["owner"], d["permissions"][0]["group"]) == ("1000", "1000")),
    ("timeout as digit string", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: '90'}]}\n",
     lambda d: d["hooks"]["AfterInstall"][0]["timeout"] == 90),
    ("timeout above an hour is allowed", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: 7200}]}\n",
     lambda d: d["hooks"]["AfterInstall"][0]["timeout"] == 7200),
    ("empty event is no scripts", HEAD + "hooks:\n  AfterInstall:\n", lambda d: d["hooks"] == {}),
    ("all nine scriptable events", HEAD + "hooks:\n" + "".join("  %s: [{location: s/%s.sh}]\n" % (e, e) for e in SCRIPTABLE_EVENTS),
     lambda d: list(d["hooks"]) == list(SCRIPTABLE_EVENTS)),
    ("context name is the agent's spelling of user",
     HEAD + "permissions: [{object: /opt/a, context: {name: system_u, type: t, range: 's0-s0:c0.c1023'}}]\n",
     lambda d: d["permissions"][0]["context"] == {"user": "system_u", "type": "t", "range": "s0-s0:c0.c1023"}),
    ("acl forms accepted by the agent", HEAD + "permissions: [{object: /o, acls: ['d:u:bob:rwx', 'g:staff:5', 'm::r', 'mask:rw', 'alice:r-x']}]\n",
     lambda d: len(d["permissions"][0]["acls"]) == 5),
    ("same destination from two different sources", HEAD + "files: [{source: a/, destination: /opt/x}, {source: b/, destination: /opt/x}]\n",
     lambda d: len(d["files"]) == 2),
    ("type directory only", HEAD + "permissions: [{object: /o, mode: 755, type: [directory]}]\n",
     lambda d: d["permissions"][0]["type"] == ["directory"]),
    ("byte order mark", "\ufeff" + HEAD, lambda d: d["os"] == "linux"),
]


@pytest.mark.parametrize("name,text,check", VALID, ids=[v[0] for v in VALID])
def test_valid_corpus(name, text, check):
    assert check(parse_appspec(text).to_dict()), name


# ---------------------------------------------------------------------------------------------
# Invalid corpus: (id, text, [fragments that must ALL appear in one error each])
# ---------------------------------------------------------------------------------------------

INVALID = [
    ("version 1.0", "version: 1.0\nos: linux\n", ["appspec.yml: version: expected 0.0", "got 1.0"]),
    ("version string 1.0", "version: '1.0'\nos: linux\n", ["version: expected 0.0", "'1.0'"]),
    ("version 0.00", "version: 0.00\nos: linux\n", ["version: expected 0.0", "got 0.00"]),
    ("version int 0", "version: 0\nos: linux\n", ["version: expected 0.0"]),
    ("version missing", "os: linux\n", ["version: is required"]),
    ("os missing", "version: 0.0\n", ["os: is required"]),
    ("os windows", "version: 0.0\nos: windows\n", ["os: Windows hosts are not supported"]),
    ("os other", "version: 0.0\nos: solaris\n", ["os: expected linux", "'solaris'"]),
    ("unknown top key", HEAD + "file: []\n", ["appspec.yml: file: unknown key", "did you mean 'files'"]),
    ("lambda keys in ec2 appspec", HEAD + "Resources: []\n", ["Resources: unknown key", "kind=lambda"]),
    ("top level is a list", "- a\n- b\n", ["top level: expected a mapping, got a list"]),
    ("empty file", "", ["the file is empty"]),
    ("files not a list", HEAD + "files: {source: /, destination: /x}\n", ["files: expected a list", "got a mapping"]),
    ("files entry not mapping", HEAD + "files: [/opt]\n", ["files[0]: expected a mapping, got '/opt'"]),
    ("files source missing", HEAD + "files: [{destination: /x}]\n", ["files[0].source: is required"]),
    ("files destination missing", HEAD + "files: [{source: a}]\n", ["files[0].destination: is required"]),
    ("relative destination", HEAD + "files: [{source: a, destination: opt/app}]\n",
     ["files[0].destination: expected an absolute path on the host, got 'opt/app'"]),
    ("destination with ..", HEAD + "files: [{source: a, destination: /opt/../etc}]\n", ["files[0].destination: expected an absolute path without '..'"]),
    ("source escapes bundle", HEAD + "files: [{source: ../secrets, destination: /x}]\n", ["files[0].source: expected a path inside the bundle"]),
    ("unknown key in files entry", HEAD + "files: [{source: a, destination: /x, mode: 644}]\n", ["files[0].mode: unknown key"]),
    ("same source twice to one destination", HEAD + "files: [{source: a.txt, destination: /x}, {source: /a.txt, destination: /x/}]\n",
     ["files[1]: source '/a.txt' is copied to destination '/x/' twice (also files[0])"]),
    ("destination not a string", HEAD + "files: [{source: a, destination: [1]}]\n", ["files[0].destination: expected a string, got a list"]),
    ("bad file_exists_behavior", HEAD + "file_exists_behavior: REPLACE\n",
     ["file_exists_behavior: expected one of DISALLOW, OVERWRITE, RETAIN, got 'REPLACE'"]),
    ("reserved event Install", HEAD + "hooks: {Install: [{location: a.sh}]}\n", ["hooks.Install: Install is performed by the deployment engine"]),
    ("reserved event BlockTraffic", HEAD + "hooks: {BlockTraffic: [{location: a.sh}]}\n", ["hooks.BlockTraffic: BlockTraffic is performed"]),
    ("reserved event DownloadBundle", HEAD + "hooks: {DownloadBundle: [{location: a.sh}]}\n", ["hooks.DownloadBundle:"]),
    ("reserved event AllowTraffic", HEAD + "hooks: {AllowTraffic: [{location: a.sh}]}\n", ["hooks.AllowTraffic:"]),
    ("unknown event with suggestion", HEAD + "hooks: {AfterInstal: [{location: a.sh}]}\n",
     ["hooks.AfterInstal: unknown lifecycle event", "did you mean 'AfterInstall'"]),
    ("hooks not a mapping", HEAD + "hooks: [AfterInstall]\n", ["hooks: expected a mapping, got a list"]),
    ("event not a list", HEAD + "hooks: {AfterInstall: {location: a.sh}}\n", ["hooks.AfterInstall: expected a list", "got a mapping"]),
    ("script location missing", HEAD + "hooks: {AfterInstall: [{timeout: 5}]}\n", ["hooks.AfterInstall[0].location: is required"]),
    ("timeout not a number", HEAD + "hooks: {AfterInstall: [{location: a.sh}, {location: b.sh, timeout: abc}]}\n",
     ["appspec.yml: hooks.AfterInstall[1].timeout: expected an integer > 0 (seconds), got 'abc'"]),
    ("timeout zero", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: 0}]}\n", ["hooks.AfterInstall[0].timeout: expected an integer > 0", "got 0"]),
    ("timeout negative", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: -5}]}\n", ["hooks.AfterInstall[0].timeout:", "got -5"]),
    ("timeout float", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: 1.5}]}\n", ["hooks.AfterInstall[0].timeout:", "got 1.5"]),
    ("timeout boolean", HEAD + "hooks: {AfterInstall: [{location: a.sh, timeout: yes}]}\n", ["hooks.AfterInstall[0].timeout:", "boolean"]),
    ("unknown script key", HEAD + "hooks: {AfterInstall: [{location: a.sh, sudo: true}]}\n",
     ["hooks.AfterInstall[0].sudo: unknown key; allowed keys here: location, timeout, runas"]),
    ("runas not string", HEAD + "hooks: {AfterInstall: [{location: a.sh, runas: [root]}]}\n", ["hooks.AfterInstall[0].runas: expected a string"]),
    ("script location escapes bundle", HEAD + "hooks: {AfterInstall: [{location: ../../bin/rm}]}\n",
     ["hooks.AfterInstall[0].location: expected a script path inside the bundle"]),
    ("permissions not a list", HEAD + "permissions: {object: /x}\n", ["permissions: expected a list"]),
    ("permission object missing", HEAD + "permissions: [{mode: 644}]\n", ["permissions[0].object: is required"]),
    ("permission object relative", HEAD + "permissions: [{object: opt/app, mode: 644}]\n",
     ["permissions[0].object: expected an absolute path on the host, got 'opt/app'"]),
    ("same permission object twice", HEAD + "permissions: [{object: /opt/app, mode: 644}, {object: /opt/app/, owner: a}]\n",
     ["permissions[1].object: object '/opt/app/' already has permissions in permissions[0]"]),
    ("mode not octal", HEAD + "permissions: [{object: /o, mode: 0789}]\n", ["permissions[0].mode: expected an octal mode", "'0789'"]),
    ("mode letters", HEAD + "permissions: [{object: /o, mode: rwxr-xr-x}]\n", ["permissions[0].mode: expected an octal mode", "'rwxr-xr-x'"]),
    ("mode too long", HEAD + "permissions: [{object: /o, mode: '07555'}]\n", ["permissions[0].mode:", "'07555'"]),
    ("mode as list", HEAD + "permissions: [{object: /o, mode: [644]}]\n", ["permissions[0].mode: expected an octal mode string", "got a list"]),
    ("type bad value", HEAD + "permissions: [{object: /o, mode: 644, type: [symlink]}]\n",
     ["permissions[0].type[0]: expected file or directory, got 'symlink'"]),
    ("type not list", HEAD + "permissions: [{object: /o, mode: 644, type: file}]\n", ["permissions[0].type: expected a non-empty list"]),
    ("type empty list", HEAD + "permissions: [{object: /o, mode: 644, type: []}]\n", ["permissions[0].type: expected a non-empty list"]),
    ("except not list", HEAD + "permissions: [{object: /o, mode: 644, except: a.txt}]\n", ["permissions[0].except: expected a list of strings"]),
    ("acl bad perms", HEAD + "permissions: [{object: /o, acls: ['u:bob:rwz']}]\n", ["permissions[0].acls[0]: expected permissions", "'u:bob:rwz'"]),
    ("acl base entry", HEAD + "permissions: [{object: /o, acls: ['u::rwx']}]\n", ["permissions[0].acls[0]: a user or group ACL entry needs a name"]),
    ("acl other with name", HEAD + "permissions: [{object: /o, acls: ['o:bob:r']}]\n", ["permissions[0].acls[0]: mask and other ACL entries take no name"]),
    ("context type missing", HEAD + "permissions: [{object: /o, context: {user: u}}]\n", ["permissions[0].context.type: is required"]),
    ("context bad range", HEAD + "permissions: [{object: /o, context: {type: t, range: high}}]\n", ["permissions[0].context.range: expected an SELinux range"]),
    ("context unknown key", HEAD + "permissions: [{object: /o, context: {type: t, role: r}}]\n", ["permissions[0].context.role: unknown key"]),
    ("permission unknown key", HEAD + "permissions: [{object: /o, owners: a}]\n", ["permissions[0].owners: unknown key", "did you mean 'owner'"]),
    ("yaml syntax error", HEAD + "files:\n  - source: a\n   destination: /x\n", ["appspec.yml: line 5, column 4: YAML syntax error"]),
    ("yaml duplicate key", HEAD + "hooks: {}\nhooks: {}\n", ["line 4, column 1: duplicate key 'hooks' (first at line 3)"]),
]


@pytest.mark.parametrize("name,text,fragments", INVALID, ids=[v[0] for v in INVALID])
def test_invalid_corpus(name, text, fragments):
    with pytest.raises(AppSpecError) as exc:
        parse_appspec(text)
    errors = exc.value.errors
    assert any(all(f in e for f in fragments) for e in errors), "%s: no error contains %r in %r" % (name, fragments, errors)
    assert all(e.startswith("appspec.yml: ") for e in errors)
    assert str(exc.value) == "\n".join(errors)
    assert isinstance(exc.value, ValueError)


def test_corpus_size():
    assert len(VALID) + len(INVALID) >= 40


def test_all_errors_reported_together():
    text = y("""
        version: 1.0
        os: windows
        colour: blue
        files:
          - source: a
            destination: relative
        file_exists_behavior: MAYBE
        permissions:
          - object: /o
            mode: 999
          - object: /o
            owner: x
        hooks:
          Install:
            - location: a.sh
          AfterInstall:
            - location: b.sh
              timeout: abc
            - timeout: 10
    """)
    with pytest.raises(AppSpecError) as exc:
        parse_appspec(text, "bundle/appspec.yml")
    paths = [e.split(": ")[1] for e in exc.value.errors]
    assert paths == [
        "colour", "version", "os", "files[0].destination", "file_exists_behavior", "permissions[0].mode",
        "permissions[1].object", "hooks.Install", "hooks.AfterInstall[0].timeout", "hooks.AfterInstall[1].location",
    ]
    assert all(e.startswith("bundle/appspec.yml: ") for e in exc.value.errors)


def test_validate_appspec_data_returns_errors_without_raising():
    spec, errors = validate_appspec_data({"version": "0.0", "os": "linux", "hooks": {"Install": []}}, "x.yml")
    assert spec is None and errors == [
        "x.yml: hooks.Install: Install is performed by the deployment engine itself and cannot run scripts; "
        "scriptable events: " + ", ".join(SCRIPTABLE_EVENTS)
    ]
    spec, errors = validate_appspec_data({"version": "0.0", "os": "linux"})
    assert errors == [] and isinstance(spec, AppSpec)


def test_custom_filename_in_messages():
    with pytest.raises(AppSpecError) as exc:
        parse_appspec("version: 0.0\n", "myapp/appspec.yaml")
    assert exc.value.errors == ["myapp/appspec.yaml: os: is required; expected linux"]


# ---------------------------------------------------------------------------------------------
# Lambda appspec errors
# ---------------------------------------------------------------------------------------------

LAMBDA_INVALID = [
    ("two functions", LAMBDA_SAMPLE.replace("Hooks:", "  - other: {Type: AWS::Lambda::Function}\nHooks:"),
     ["Resources: expected exactly one function, got 2"]),
    ("wrong type", LAMBDA_SAMPLE.replace("AWS::Lambda::Function", "AWS::ECS::Service"),
     ["Resources[0].myLambdaFunction.Type: expected AWS::Lambda::Function, got 'AWS::ECS::Service'"]),
    ("missing alias", LAMBDA_SAMPLE.replace('        Alias: "myLambdaFunctionAlias"\n', ""),
     ["Resources[0].myLambdaFunction.Properties.Alias: is required"]),
    ("latest version", LAMBDA_SAMPLE.replace('TargetVersion: "2"', 'TargetVersion: "$LATEST"'),
     ["Properties.TargetVersion: expected a published version number", "'$LATEST'"]),
    ("unknown property", LAMBDA_SAMPLE.replace('CurrentVersion: "1"', 'CurrentVersion: "1"\n        Version: "3"'),
     ["Properties.Version: unknown key"]),
    ("bad hook event", LAMBDA_SAMPLE.replace("- AfterAllowTraffic", "- ValidateService"),
     ["Hooks[1].ValidateService: expected BeforeAllowTraffic or AfterAllowTraffic"]),
    ("hook twice", LAMBDA_SAMPLE.replace("- AfterAllowTraffic", "- BeforeAllowTraffic"), ["Hooks[1].BeforeAllowTraffic: BeforeAllowTraffic is given twice"]),
    ("missing resources", "version: 0.0\n", ["Resources: is required"]),
    ("ec2 keys", "version: 0.0\nhooks: {}\n", ["hooks: unknown key", "kind=ec2"]),
]


@pytest.mark.parametrize("name,text,fragments", LAMBDA_INVALID, ids=[v[0] for v in LAMBDA_INVALID])
def test_lambda_invalid(name, text, fragments):
    with pytest.raises(AppSpecError) as exc:
        parse_lambda_appspec(text, "lambda.yml")
    assert any(all(f in e for f in fragments) for e in exc.value.errors), exc.value.errors
    assert all(e.startswith("lambda.yml: ") for e in exc.value.errors)


def test_lambda_collects_all_errors():
    text = LAMBDA_SAMPLE.replace('TargetVersion: "2"', "TargetVersion: latest").replace('Name: "myLambdaFunction"', "Name: ''")
    with pytest.raises(AppSpecError) as exc:
        parse_lambda_appspec("version: 2.0\n" + text.split("\n", 1)[1])
    assert len(exc.value.errors) == 3


# ---------------------------------------------------------------------------------------------
# Checks against the bundle's contents
# ---------------------------------------------------------------------------------------------


def test_bundle_consistency_detects_conflicts_and_missing_paths():
    spec = parse_appspec(HEAD + y("""
        files:
          - source: a/
            destination: /opt/x
          - source: b
            destination: /opt/x
          - source: conf/app.ini
            destination: /etc
          - source: missing
            destination: /opt/y
        permissions:
          - object: /etc/app.ini
            pattern: "*.ini"
            mode: 644
          - object: /opt/x
            pattern: "*.txt"
            mode: 644
        hooks:
          AfterInstall:
            - location: scripts/ok.sh
            - location: scripts/nope.sh
    """))
    entries = {"a": "dir", "a/same.txt": "file", "a/only-a.txt": "file", "b": "dir", "b/same.txt": "file",
               "conf": "dir", "conf/app.ini": "file", "scripts": "dir", "scripts/ok.sh": "file"}
    errors = check_bundle_consistency(spec, entries)
    assert errors == [
        "appspec.yml: files[1]: two sources copy to the same destination /opt/x/same.txt: 'a/same.txt' and 'b/same.txt'; rename or remove one",
        "appspec.yml: files[3].source: 'missing' does not exist in the bundle",
        "appspec.yml: permissions[0].pattern: object /etc/app.ini is a file: expected no pattern (or '**'), got '*.ini'",
        "appspec.yml: hooks.AfterInstall[1].location: script 'scripts/nope.sh' does not exist in the bundle",
    ]


def test_bundle_consistency_root_source_and_file_except():
    spec = parse_appspec(HEAD + y("""
        files: [{source: /, destination: /srv}]
        permissions: [{object: /srv/run.sh, except: [x], mode: 755}]
    """))
    errors = check_bundle_consistency(spec, {"run.sh": "file", "appspec.yml": "file"})
    assert errors == ["appspec.yml: permissions[0].except: object /srv/run.sh is a file: expected no except, got ['x']"]
    assert check_bundle_consistency(parse_appspec(WORDPRESS), {
        "scripts": "dir", **{"scripts/%s" % n: "file" for n in (
            "install_dependencies.sh", "change_permissions.sh", "start_server.sh", "create_test_db.sh", "stop_server.sh")}}) == []
