"""`mdm variance` and `mdm fit-ppots` (registered by mdm.cli; heavy imports happen inside the commands)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

from mdm.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("variance", help="decompose a model's training-loss variance into A (pattern), "
                       "B (rate), C (data) for each method")
    p.add_argument("--config", required=True, help="spec YAML (a run's model and data sections, pilot sizes), e.g. "
                   "benchmarks/variance_tiny.yaml")
    p.add_argument("--methods", help="comma-separated presets (e.g. standard,mirror,ppots+mirror,strats; 'arm' = "
                   "the causal twin); default: the spec's list")
    _sizes(p)
    p.add_argument("--gradient", action="store_true", help="decompose per-sample gradients (a parameter subset, "
                   "randomly projected: spec.gradient) instead of the loss; uses spec.gradient's a, b, c")
    p.add_argument("--batch-size", type=int, help="global batch n of the batch view (StraTS); default spec.pilot.batch_size")
    p.add_argument("--ppots-density", help="P-POTS density JSON (mdm fit-ppots) for 'ppots' methods; default: fit "
                   "one from this pilot's Standard table")
    p.add_argument("--out", required=True, help="output folder: variance.json, variance.png")
    p.set_defaults(func=cmd_variance)

    p = sub.add_parser("fit-ppots", help="fit the P-POTS t-density from a Standard pilot: ppots.json, ppots.png")
    p.add_argument("--config", required=True, help="spec YAML (model, data, pilot sizes)")
    _sizes(p)
    p.add_argument("--full-second-moment", action="store_true", default=None,
                   help="w = sqrt(E[l^2 | t]) including the between-x0 spread (the paper omits it)")
    p.add_argument("--mix", type=float, help="uniform mixing: p <- (1 - mix) p + mix")
    p.add_argument("--strict", action="store_true", default=None,
                   help="a fit that does not converge is an error (default: warn, or fall back to the empirical w)")
    p.add_argument("--out", required=True, help="output folder: ppots.json, ppots.png")
    p.set_defaults(func=cmd_fit_ppots)


@contextlib.contextmanager
def _user_errors(where: str):
    """A plain ValueError from the pilot or the fit (NaN losses, a strict fit that failed) is the user's
    input problem: report it as one line (mdm.cli prints ConfigErrors without a traceback)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(where, str(e)) from None


def _sizes(p) -> None:
    p.add_argument("--a", type=int, help="clean sequences x0 (paper: 15)")
    p.add_argument("--b", type=int, help="t grid values (paper: 70)")
    p.add_argument("--c", type=int, help="masks per (x0, t) (paper: 15)")
    p.add_argument("--seed", type=int, help="pilot seed (x0 choice and masks); default spec.seed")
    p.add_argument("--token-budget", type=int, help="max tokens per forward pass; default spec.pilot.token_budget")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: spec.threads, else torch's; 1 is "
                   "often faster on a machine shared with other jobs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _writable_out(path: str) -> Path:
    """--out is created and checked before any compute (results are written only at the end)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"{out}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ConfigError("--out", f"{out}: the folder is not writable")
    return out


def _setup(args, gradient: bool = False):
    # deferred: the CLI's subcommands import only what they run
    from mdm.profiling.spec import load_spec
    from mdm.variance.estimator import check_sizes

    spec = load_spec(args.config)
    threads = spec.threads if args.threads is None else args.threads
    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads", f"must be >= 1 (got {threads})")
        import torch  # deferred: the CLI's subcommands import only what they run

        torch.set_num_threads(threads)
    base = spec.gradient if gradient else spec.pilot
    a, b, c = (getattr(args, k) if getattr(args, k) is not None else getattr(base, k) for k in "abc")
    check_sizes(a, b, c, "--a/--b/--c" if any(getattr(args, k) is not None for k in "abc") else
                ("gradient" if gradient else "pilot"))
    seed = spec.seed if args.seed is None else args.seed
    budget = args.token_budget or spec.pilot.token_budget
    _writable_out(args.out)
    return spec, a, b, c, seed, budget


def provenance() -> dict:
    from mdm.provenance import (  # deferred: the CLI's subcommands import only what they run
        code_version,
        hardware,
    )

    return {"code_version": code_version(), "hardware": hardware()}


def cmd_variance(args) -> None:
    spec, a, b, c, seed, budget = _setup(args, args.gradient)
    methods = [m.strip() for m in (args.methods.split(",") if args.methods else spec.methods) if m.strip()]
    if not methods:
        raise ConfigError("--methods", "no method given")
    # deferred: the CLI's subcommands import only what they run
    from mdm.objective.components.t_samplers import PPOTS
    from mdm.variance.epr import MIN_GRID
    from mdm.variance.estimator import t_grid
    from mdm.variance.profile import ARM, build_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = [build_method(n, f"--methods.{n}") for n in methods if n != ARM]  # fail before loading anything
    if args.ppots_density:
        from mdm.variance import fit as fitting  # deferred: the CLI's subcommands import only what they run

        try:
            fitting.load(args.ppots_density)
        except ConfigError as e:
            raise ConfigError("--ppots-density", str(e)) from None
    needs_fit = any(isinstance(m.t_sampler, PPOTS) and m.t_sampler.config.density == "auto" for m in built)
    if needs_fit and not args.ppots_density and len(t_grid(b, spec.pilot.grid)[0]) < MIN_GRID:
        raise ConfigError("pilot.b", f"grid too coarse to fit P-POTS: {b} t values; the EPR fit needs at least "
                          f"{MIN_GRID} (or pass --ppots-density)")
    # deferred: the CLI's subcommands import only what they run
    from mdm.adapters import checked
    from mdm.profiling.spec import load, pick_x0
    from mdm.variance.plots import plot_variance
    from mdm.variance.profile import Profiler, run_variance, save_json

    progress = not args.no_progress
    loaded = load(spec, arm=ARM in methods, progress=progress, lora=args.gradient and spec.gradient.params == "lora")
    x0 = pick_x0(loaded.items, a, seed, loaded.tokenizer, spec.data.spec(), spec.data.max_length,
                 pad_carries_loss=not checked(loaded.model).can_pad)
    gradient = spec.gradient.model_dump() if args.gradient else None
    profiler = Profiler(loaded.model, x0, mask_token_id=loaded.mask_token_id, b=b, c=c, grid=spec.pilot.grid,
                        seed=seed, token_budget=budget, arm_model=loaded.arm, gradient=gradient, progress=progress)
    with _user_errors("methods"):
        result = run_variance(profiler, methods, batch_size=args.batch_size or spec.pilot.batch_size,
                              bootstrap=spec.pilot.bootstrap, ppots_density=args.ppots_density,
                              fit_options=spec.fit.model_dump())
    result |= {"model": loaded.model_id, "data": loaded.data_id, "seed": seed, "config": str(args.config),
               "spec": spec.model_dump(mode="json"), "base": loaded.base} | provenance()
    out = Path(args.out)
    save_json(result, out / "variance.json")
    plot_variance(result, out / "variance.png")
    print_table(result)
    print(f"wrote {out / 'variance.json'} and {out / 'variance.png'} ({result['forward_rows']:,} sequence forwards, "
          f"{result['forward_tokens']:,} tokens, {result['seconds']:.0f} s)")


def print_table(result: dict) -> None:
    # deferred: the CLI's subcommands import only what they run
    from rich.console import Console
    from rich.table import Table

    methods = result["methods"]
    unit = "gradient (trace)" if result["mode"] == "gradient" else "loss"
    table = Table(title=f"{unit} variance, batch view x n={result['batch_size']} (a={result['a']}, "
                  f"b={result['b']}, c={result['c']}; +- bootstrap SE)")
    for col in ("method", "A (pattern)", "B (rate)", "C (data)", "total", "total / standard", "A at t<0.5", "passes"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m in methods.items():
        cells = [_pm(m[k], m[k + "_se"]) for k in ("A", "B", "C", "total")]
        vs = m.get("vs_standard", {})
        rel = _pm(vs["total_ratio"], vs["total_ratio_se"]) if "total_ratio" in vs else "-"
        low = _pm(m["A_low_t"], m["A_low_t_se"]) if m.get("A_low_t") is not None else "-"
        table.add_row(name, *cells, rel, low, f"{m['passes']:g}")
    Console(width=160, file=sys.stdout).print(table)


def _pm(value, se) -> str:
    return f"{value:.4g}" + (f" +- {se:.2g}" if se is not None and se == se else "")


def cmd_fit_ppots(args) -> None:
    spec, a, b, c, seed, budget = _setup(args)
    # deferred: the CLI's subcommands import only what they run
    from mdm.adapters import checked
    from mdm.profiling.spec import load, pick_x0
    from mdm.variance import fit as fitting
    from mdm.variance.plots import plot_ppots
    from mdm.variance.profile import Profiler, predicted_gain

    options = spec.fit.model_dump()
    for key in ("full_second_moment", "mix", "strict"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if not 0.0 <= options["mix"] < 1.0:
        raise ConfigError("--mix", f"must be in [0, 1) (got {options['mix']})")
    progress = not args.no_progress
    loaded = load(spec, progress=progress)
    x0 = pick_x0(loaded.items, a, seed, loaded.tokenizer, spec.data.spec(), spec.data.max_length,
                 pad_carries_loss=not checked(loaded.model).can_pad)
    profiler = Profiler(loaded.model, x0, mask_token_id=loaded.mask_token_id, b=b, c=c, grid=spec.pilot.grid,
                        seed=seed, token_budget=budget, progress=progress)
    with _user_errors("fit"):
        artifact = profiler.fit_ppots(**options, meta={"model": loaded.model_id, "data": loaded.data_id,
                                                      "seed": seed, "config": str(args.config)} | provenance())
    artifact["predicted"] = predicted_gain(profiler, artifact)
    out = Path(args.out)
    fitting.save(artifact, out / "ppots.json")
    plot_ppots(artifact, out / "ppots.png")
    fit = artifact["fit"]
    if artifact["family"] == "epr":
        params = ", ".join(f"{k}={v:.4g}" for k, v in fit["params"].items())
        print(f"EPR fit: KL {fit['kl']:.3g}, converged {fit['converged']} ({fit['converged_restarts']}/"
              f"{fit['restarts']} starts); {params}")
    else:
        print(f"EPR fit failed; using the empirical density ({fit.get('error')})")
    pred = artifact["predicted"]
    print(f"pilot total variance: standard {pred['standard']['total']:.4g}, ppots {pred['ppots']['total']:.4g} "
          f"({pred['ppots']['total'] / pred['standard']['total']:.3f} x)")
    print(f"wrote {out / 'ppots.json'} and {out / 'ppots.png'}")
