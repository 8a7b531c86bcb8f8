"""The HTML report of a run, shown inline in Jupyter.

``multiloop.run(fn, items, report="run.html")`` (or ``Pool(report=...)``)
has the supervisor write a self-contained page; ``show_report("run.html")``
returns an object that notebooks display as that page, in a frame (the page
needs no network: its chart code is inlined).
"""

import html
import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


class Report:
    """A report page on disk; notebooks show it inline."""

    def __init__(self, path: PathLike, height: int = 800) -> None:
        self.path = os.fspath(path)
        self.height = height

    def html(self) -> str:
        """The page itself."""
        with open(self.path, encoding="utf-8") as page:
            return page.read()

    def _repr_html_(self) -> str:
        # srcdoc keeps the page's scripts apart from the notebook's own.
        page = html.escape(self.html(), quote=True)
        return (
            f'<iframe srcdoc="{page}" style="width:100%;height:{int(self.height)}px;border:0" '
            f'title="multiloop report {html.escape(self.path)}"></iframe>'
        )

    def __repr__(self) -> str:
        return f"Report({self.path!r})"


def show_report(path: PathLike, height: int = 800) -> Report:
    """The report at ``path``, for display: the last expression of a
    notebook cell, or ``IPython.display.display(show_report(...))``."""
    return Report(path, height)
