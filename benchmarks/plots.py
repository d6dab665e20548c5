"""PNG figures of a run (matplotlib's Agg canvas, no pyplot, no display)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import NullLocator

__all__ = ["write_plots"]

MIB = 2**20


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes if ncols > 1 else [axes]


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    path = out / name
    fig.savefig(path, format="png")
    return str(path)


def _main(results: dict, out: Path) -> list[str]:
    paths = []
    for size, main in results["main"].items():
        modes = list(main["modes"])
        m = main["modes"]
        rss = (results.get("rss") or {}).get(size, {})
        fig, (ax_t, ax_m) = _figure(12, 4.5, 2)
        fwd = [m[k].get("forward_s") or 0 for k in modes]
        bwd = [m[k].get("backward_s") or 0 for k in modes]
        opt = [m[k].get("optimizer_s") or 0 for k in modes]
        ax_t.bar(modes, fwd, label="forward")
        ax_t.bar(modes, bwd, bottom=fwd, label="backward")
        ax_t.bar(modes, opt, bottom=[a + b for a, b in zip(fwd, bwd, strict=True)], label="Adam")
        ax_t.set_ylabel("s / training iteration (median)")
        ax_t.set_title(f"time, {size}x{size} batch {main['batch']}")
        ax_t.legend()
        width = 0.27
        series = [
            ("saved for backward", [(m[k].get("saved_bytes") or 0) / MIB for k in modes]),
            ("peak allocated", [(m[k].get("peak_alloc_bytes") or 0) / MIB for k in modes]),
            (
                "peak RSS above import",
                [(rss.get(k, {}).get("peak_above_import_bytes") or 0) / MIB for k in modes],
            ),
        ]
        for i, (label, values) in enumerate(series):
            ax_m.bar([j + (i - 1) * width for j in range(len(modes))], values, width, label=label)
        ax_m.set_xticks(range(len(modes)), modes)
        ax_m.set_ylabel("MiB")
        ax_m.set_title("memory")
        ax_m.legend()
        for ax in (ax_t, ax_m):
            ax.tick_params(axis="x", labelrotation=30)
        paths.append(_save(fig, out, f"main_{size}.png"))
    return paths


def _lines(ax, rows, key, value, scale=1.0, style="-", suffix=""):
    for i, mode in enumerate(dict.fromkeys(r["mode"] for r in rows)):
        pts = [(r[key], r.get(value)) for r in rows if r["mode"] == mode and r.get(value)]
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] / scale for p in pts],
                style,
                marker="o",
                color=f"C{i}",
                label=mode + suffix,
            )
    ax.set_xscale("log", base=2)
    ticks = sorted({r[key] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def _scaling(results: dict, out: Path) -> list[str]:
    scaling = results.get("scaling") or {}
    paths = []
    if scaling.get("max_iter"):
        s = scaling["max_iter"]
        fig, (ax,) = _figure(6.5, 4.5)
        _lines(ax, s["rows"], "max_iter", "saved_bytes", MIB)
        ax.set_xlabel("CG max_iter (all iterations run)")
        ax.set_ylabel("MiB saved for backward")
        ax.set_title(f"saved bytes vs max_iter, {s['size']}x{s['size']} batch {s['batch']}")
        paths.append(_save(fig, out, "saved_vs_max_iter.png"))
    for name in ("size", "batch"):
        if not scaling.get(name):
            continue
        rows = scaling[name]["rows"]
        fig, (ax_t, ax_m) = _figure(12, 4.5, 2)
        _lines(ax_t, rows, name, "time_s")
        _lines(ax_m, rows, name, "saved_bytes", MIB, suffix=" saved")
        _lines(ax_m, rows, name, "peak_alloc_bytes", MIB, style="--", suffix=" peak")
        ax_t.set_ylabel("s / training iteration (median)")
        ax_m.set_ylabel("MiB: saved for backward (solid), peak allocated (dashed)")
        for ax in (ax_t, ax_m):
            ax.set_xlabel("image side (px)" if name == "size" else "batch size")
        paths.append(_save(fig, out, f"scaling_{name}.png"))
    return paths


def _cg(results: dict, out: Path) -> list[str]:
    rows = (results.get("cg") or {}).get("rows")
    if not rows:
        return []
    gammas = list(dict.fromkeys(r["gamma"] for r in rows))
    paddings = list(dict.fromkeys(r["padding"] for r in rows))
    fig, axes = _figure(4 * len(gammas), 4, len(gammas))
    for ax, gamma in zip(axes, gammas, strict=True):
        keyed = {(r["padding"], r["preconditioner"]): r for r in rows if r["gamma"] == gamma}
        names = [n for n in dict.fromkeys(r["preconditioner"] for r in rows) if n != "auto"]
        width = 0.8 / len(names)
        for i, pre in enumerate(names):
            its = [keyed[(p, pre)]["forward_iterations"] for p in paddings]
            offset = (i - (len(names) - 1) / 2) * width
            ax.bar([j + offset for j in range(len(paddings))], its, width, label=pre)
        ax.set_xticks(range(len(paddings)), paddings)
        ax.set_title(f"gamma = {gamma:g}")
        ax.set_ylabel("CG iterations to the floor")
        ax.legend(title="preconditioner")
    return [_save(fig, out, "cg_iterations.png")]


def write_plots(results: dict, out: Path) -> list[str]:
    """Write every figure the run has data for into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if results.get("main"):
        paths += _main(results, out)
    paths += _scaling(results, out)
    paths += _cg(results, out)
    return paths
