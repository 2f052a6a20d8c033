"""The README's library example runs as written and prints what the README shows."""
import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_library_example_prints_what_readme_shows():
    example = re.search(r"## The adapter library.*?```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", README, re.S)
    code, shown = example.groups()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue() == shown
