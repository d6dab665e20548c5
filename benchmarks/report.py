"""The headline figures of a run, and its markdown tables."""

from __future__ import annotations

import math

__all__ = ["headline", "markdown"]

MIB = 2**20


def _get(d: dict | None, *keys):
    for key in keys:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def headline(results: dict) -> dict:
    """The figures the performance issue asks for, per main size (``None`` where a part
    did not run): implicit vs deepinv implicit (time, saved bytes, RSS), the
    least-squares overhead over the denoiser-only network, the gradient error, and the
    flatness of the implicit mode's saved bytes in ``max_iter``."""
    out: dict = {}
    for size, main in (results.get("main") or {}).items():
        modes = main["modes"]
        rss = (results.get("rss") or {}).get(size, {})
        t = {m: _get(modes, m, "time_s") for m in modes}
        h = {
            "implicit_over_deepinv_implicit_time": _ratio(
                t.get("implicit"), t.get("deepinv-implicit")
            ),
            "implicit_over_deepinv_implicit_time_paired": _get(
                main, "paired", "implicit/deepinv-implicit"
            ),
            "least_squares_overhead": None,
            "least_squares_overhead_paired": None,
            "implicit_grad_rel_error": _get(modes, "implicit", "grad_rel_error"),
            "implicit_saved_over_deepinv_implicit": _ratio(
                _get(modes, "implicit", "saved_bytes"),
                _get(modes, "deepinv-implicit", "saved_bytes"),
            ),
            "implicit_rss_over_deepinv_implicit": _ratio(
                _get(rss, "implicit", "peak_above_import_bytes"),
                _get(rss, "deepinv-implicit", "peak_above_import_bytes"),
            ),
        }
        if t.get("implicit") is not None and t.get("denoiser"):
            h["least_squares_overhead"] = t["implicit"] / t["denoiser"] - 1
        paired = _get(main, "paired", "implicit/denoiser")
        if paired is not None:
            h["least_squares_overhead_paired"] = paired - 1
        out[str(size)] = h
    rows = _get(results, "scaling", "max_iter", "rows") or []
    implicit = {r["max_iter"]: r["saved_bytes"] for r in rows if r["mode"] == "implicit"}
    if len(implicit) >= 2:
        lo, hi = min(implicit), max(implicit)
        out["implicit_saved_max_iter_ratio"] = {
            "max_iters": [lo, hi],
            "ratio": _ratio(implicit[hi], implicit[lo]),
        }
    return out


def _fmt(value, digits=3, scale=1.0, pct=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if pct:
        return f"{100 * value:+.1f}%"
    value = value / scale
    if isinstance(value, float) and (abs(value) >= 1e4 or 0 < abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def _main_table(size, main: dict, rss: dict) -> list[str]:
    modes = main["modes"]
    base = _get(modes, "denoiser", "time_s")
    lines = [
        f"### {size}x{size}, batch {main['batch']}, {main['iters']} timed iterations "
        f"(median), {main['warmup']} warm-up",
        "",
        "| mode | s/iter | forward s | backward s | x denoiser-only | CG its fwd / bwd "
        "| saved for backward MiB | peak allocated MiB | peak RSS above import MiB "
        "| grad rel. error (float64 ref.) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in modes.items():
        its = "-"
        if m.get("cg_forward") is not None:
            its = f"{m['cg_forward']:.1f} / {m['cg_backward']:.1f}"
        rss_mode = rss.get(mode, {})
        rss_cell = _fmt(rss_mode.get("peak_above_import_bytes"), 4, MIB)
        if "error" in rss_mode:
            rss_cell = "failed"
        lines.append(
            f"| {mode} | {_fmt(m.get('time_s'))} | {_fmt(m.get('forward_s'))} "
            f"| {_fmt(m.get('backward_s'))} | {_fmt(_ratio(m.get('time_s'), base))} | {its} "
            f"| {_fmt(m.get('saved_bytes'), 4, MIB)} | {_fmt(m.get('peak_alloc_bytes'), 4, MIB)} "
            f"| {rss_cell} | {_fmt(m.get('grad_rel_error'), 2)} |"
        )
    return lines


def cg_table(rows: list[dict]) -> list[str]:
    """The CG table: iterations to the floor per padding, gamma and preconditioner."""
    names = list(dict.fromkeys(r["preconditioner"] for r in rows if r["preconditioner"] != "auto"))
    errors = any("forward_error" in r for r in rows)
    head = " | ".join(names)
    lines = [
        "### CG iterations to the float floor (forward / backward solve), seed problem",
        "",
        f"| padding | gamma | {head} | auto picks | auto picks, kernel not separable "
        f"| seed solver its {' / '.join(names)} "
        f"| ms per solve {' / '.join(names)} |"
        + (f" rel. error fwd / bwd vs dense float64: {' ; '.join(names)} |" if errors else ""),
        "|---" * (len(names) + 6 + errors) + "|",
    ]
    keyed = {(r["padding"], r["gamma"], r["preconditioner"]): r for r in rows}
    for padding, gamma in dict.fromkeys((r["padding"], r["gamma"]) for r in rows):
        cells = [keyed[(padding, gamma, n)] for n in names]
        seed = " (seed)" if cells[0]["seed_gamma"] else ""
        its = " | ".join(
            f"{c['forward_iterations']:.0f} / {c['backward_iterations']:.0f}" for c in cells
        )
        seed_its = " / ".join(f"{c['seed_solver_iterations']:.0f}" for c in cells)
        ms = " / ".join(f"{1e3 * c['seed_solver_time_s']:.1f}" for c in cells)
        auto = cells[0]["auto_choice"]
        others = cells[0].get("auto_choice_not_separable", auto)
        line = f"| {padding} | {gamma:g}{seed} | {its} | {auto} | {others} | {seed_its} | {ms} |"
        if errors:
            err = " ; ".join(
                f"{c.get('forward_error', float('nan')):.1e} / "
                f"{c.get('backward_error', float('nan')):.1e}"
                for c in cells
            )
            line += f" {err} |"
        lines.append(line)
    return lines


def _pivot(rows: list[dict], key: str, value: str, scale: float, title: str) -> list[str]:
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lines = [title, "", f"| {key} | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for k in dict.fromkeys(r[key] for r in rows):
        cells = {r["mode"]: r.get(value) for r in rows if r[key] == k}
        lines.append(f"| {k} | " + " | ".join(_fmt(cells.get(m), 4, scale) for m in modes) + " |")
    return lines


def markdown(results: dict) -> str:
    """Every table of the run, markdown."""
    machine = results["machine"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"torch {machine['torch_version']} with {machine['torch_threads']} threads, "
        f"device {machine['device']}" + (f" ({machine['gpu']})" if machine.get("gpu") else ""),
        f"deepinv: {results.get('deepinv', {}).get('status', '-')}",
        "",
    ]
    for size, main in (results.get("main") or {}).items():
        lines += _main_table(size, main, (results.get("rss") or {}).get(size, {})) + [""]
    head = results.get("headline", {})
    for size, h in head.items():
        if not size.isdigit():
            continue
        lines.append(
            f"- {size}x{size}: implicit / deepinv implicit time = "
            f"{_fmt(h['implicit_over_deepinv_implicit_time'])} "
            f"(paired {_fmt(h['implicit_over_deepinv_implicit_time_paired'])}); "
            f"least-squares overhead = {_fmt(h['least_squares_overhead'], pct=True)} "
            f"(paired {_fmt(h['least_squares_overhead_paired'], pct=True)}); "
            f"implicit grad rel. error = {_fmt(h['implicit_grad_rel_error'], 2)}; "
            f"saved bytes implicit / deepinv implicit = "
            f"{_fmt(h['implicit_saved_over_deepinv_implicit'])}; "
            "peak RSS implicit / deepinv implicit = "
            f"{_fmt(h['implicit_rss_over_deepinv_implicit'])}"
        )
    if "implicit_saved_max_iter_ratio" in head:
        r = head["implicit_saved_max_iter_ratio"]
        lines.append(
            f"- implicit saved bytes, max_iter {r['max_iters'][1]} / {r['max_iters'][0]} = "
            f"{_fmt(r['ratio'], 6)}"
        )
    lines.append("")
    if results.get("cg"):
        lines += cg_table(results["cg"]["rows"]) + [""]
    scaling = results.get("scaling") or {}
    if scaling.get("max_iter"):
        s = scaling["max_iter"]
        lines += _pivot(
            s["rows"],
            "max_iter",
            "saved_bytes",
            MIB,
            f"### Saved for backward (MiB) vs CG max_iter, {s['size']}x{s['size']}, "
            f"batch {s['batch']}",
        ) + [""]
    for name, key in (("size", "size"), ("batch", "batch")):
        if scaling.get(name):
            rows = scaling[name]["rows"]
            fixed = "batch" if key == "size" else "size"
            lines += _pivot(
                rows, key, "time_s", 1.0, f"### s/iter vs {key} ({fixed} {rows[0][fixed]})"
            ) + [""]
            lines += _pivot(
                rows,
                key,
                "saved_bytes",
                MIB,
                f"### Saved for backward (MiB) vs {key} ({fixed} {rows[0][fixed]})",
            ) + [""]
    return "\n".join(lines)
