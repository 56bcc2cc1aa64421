"""No function in plugins/ grows over 80 lines without a reason (tests/long_functions.py)."""

from __future__ import annotations

from tests.long_functions import LIMIT, long_functions


def test_every_long_function_in_plugins_has_a_reason():
    missing = [f"{name} ({length} lines)" for name, length, reason in long_functions() if not reason]
    assert not missing, ("over %d lines without a reason - split them, or add '# long function: <why>' above "
                         "the def: %s" % (LIMIT, ", ".join(missing)))


def test_a_long_function_is_found_and_its_comment_read(tmp_path):
    def body(indent):
        return "".join(f"{indent}x{i} = {i}\n" for i in range(LIMIT))

    source = ("class Engine:\n"
              "    # long function: one state machine, easier to read whole\n"
              "    def step(self):\n" + body(" " * 8) + "\n\n"
              "def short():\n    return 1\n\n\n"
              "def plain():\n" + body(" " * 4))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "engine.py").write_text(source)
    found = {name: (length, reason) for name, length, reason in long_functions(tmp_path)}
    assert found == {
        "plugins/engine.py::Engine.step": (LIMIT + 1, "one state machine, easier to read whole"),
        "plugins/engine.py::plain": (LIMIT + 1, None),
    }
