"""How many browser sessions the server holds and how many periodic callbacks still run.

/api/health and /metrics report both, so an operator (and a test) can see that sessions
whose browser went away are freed and stop polling the runner state.
"""

from __future__ import annotations

from dataclasses import dataclass

import panel as pn
from bokeh.server.tornado import BokehTornado


@dataclass(kw_only=True)
class SessionFigures:
    """Reads the live figures from the Bokeh application once the server exists."""

    #: the server's Tornado application; None until make_server has built it
    tornado: BokehTornado | None = None

    def sessions(self) -> int:
        """Sessions open over every page."""
        if self.tornado is None:
            return 0
        return sum(len(list(self.tornado.get_sessions(path)))
                   for path in self.tornado.app_paths)

    def periodic_callbacks(self) -> int:
        """Periodic callbacks still running in any session (LiveLink's and Panel's own)."""
        # Panel keeps them per document and drops a document's list when it is destroyed.
        return sum(1 for cbs in list(pn.state._periodic.values()) for cb in list(cbs)
                   if cb.running)

    def as_dict(self) -> dict[str, int]:
        """Both figures, as /api/health reports them."""
        return {"sessions": self.sessions(), "periodic_callbacks": self.periodic_callbacks()}
