"""PNG graphs of Prometheus range results (matplotlib, Agg backend, imported lazily).

matplotlib costs ~30 MB and half a second to import: only a process that draws
a graph pays for it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_SERIES = 10
# pyplot's state machine is not thread-safe; the object API plus a lock is.
_lock = threading.Lock()


@dataclass(frozen=True)
class Plot:
    title: str
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]]  # label, [(unix time, value)]
    unit: str = ""


def render_png(plots: Sequence[Plot], width: float = 9.0) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    with _lock:
        rows = len(plots)
        figure = Figure(figsize=(width, 2.6 * rows), dpi=100, layout="constrained")
        axes_list = figure.subplots(rows, 1, squeeze=False)[:, 0]
        for axes, plot in zip(axes_list, plots, strict=True):
            for label, points in list(plot.series)[:MAX_SERIES]:
                if not points:
                    continue
                xs = [datetime.fromtimestamp(t, UTC) for t, _ in points]
                ys = [v for _, v in points]
                axes.plot(xs, ys, label=label[:60], linewidth=1.4)
            axes.set_title(plot.title, fontsize=10, loc="left")
            if plot.unit:
                axes.set_ylabel(plot.unit, fontsize=8)
            axes.grid(True, alpha=0.3)
            axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
            axes.tick_params(labelsize=8)
            if not any(points for _, points in plot.series):
                axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
            elif 1 < len(plot.series) <= MAX_SERIES:
                axes.legend(fontsize=7, loc="upper left")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
