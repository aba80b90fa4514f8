"""decollama-kv-report: perplexity, KL divergence and effective size of KV-cache formats, as one
Markdown table (and optionally a plot), all measured on the same chunks of one text.

The f16 cache runs first and its distributions at every scored position are kept (in memory; or
saved with --save-base, a decollama-perplexity --kld-base file); then every format runs and is
compared with it, exactly as `decollama-perplexity --kld` does (llama.cpp's convention: BOS-led
chunks of --ctx tokens, the second half of each scored). Per format: K and V bits per element, the
effective bits per element of the whole cache (the core's kv_info() after the run), PPL ± stderr,
ΔPPL % against f16 (paired standard error), mean KL divergence from f16 ± stderr, how often the
top-1 token agrees with f16's, and the seconds the run took (KL computation included).

    decollama-kv-report -m model.gguf -f wiki.test.raw --formats f16,q8_0,q4_0,deco4,k:deco4,v:deco2,auto:3 \\
        --ctx 512 --chunks 40 -o report.md --plot report.png

A format is a name for both caches (q8_0), K/V (q8_0/q4_0), k:FORMAT,v:FORMAT or auto:<bits>;
--kv-window and --kv-codebook apply to every format but the f16 reference. --llama-cpp adds
llama.cpp's f16 / q8_0 / q4_0 (llama-cpp-python) on the same tokens, in a table of its own:
ΔPPL and KL divergence against llama.cpp's own f16 run. --plot draws effective bits per element
against ΔPPL %, one labelled point per format (needs matplotlib: pip install matplotlib).
"""
import argparse
import datetime
import json
import os
import sys

from . import _cli
from . import perplexity as ppl
from ._engines import llama_cpp_available

PROG = "decollama-kv-report"
LLAMA_CPP_FORMATS = ("f16", "q8_0", "q4_0")


def _row(label: str, engine: str, stats, seconds: float, bits: dict, kld: dict = None) -> dict:
    row = {"format": label, "engine": engine, **bits, "ppl": stats.ppl, "ppl_stderr": stats.stderr,
           "positions": stats.count, "seconds": seconds}
    if kld is None:  # the reference itself
        row.update(delta_ppl_pct=0.0, delta_ppl_pct_stderr=0.0, kld_mean=0.0, kld_stderr=0.0, top1_agreement=1.0)
    else:
        row.update({key: kld[key] for key in ("delta_ppl_pct", "delta_ppl_pct_stderr", "kld_mean", "kld_stderr",
                                              "kld_median", "kld_p99", "kld_max", "top1_agreement",
                                              "top1_agreement_stderr", "rms_delta_p_pct")})
    return row


def run_one(engine, chunks: list, first: int, kld, progress: bool) -> tuple:
    stats = ppl.PerplexityStats()
    seconds = ppl.evaluate(engine, chunks, first, stats, progress, kld=kld)
    return stats, seconds, ppl.kv_summary(engine)


class _Tee:
    """Feeds the same logit rows to several KLD accumulators (the first one's NLL is returned)."""

    def __init__(self, *sinks):
        self.sinks = sinks

    def add(self, logits, targets):
        nll = [s.add(logits, targets) for s in self.sinks]
        return nll[0]


def _small(x: float) -> str:
    return f"{x:.6f}" if x == 0 or abs(x) >= 1e-4 else f"{x:.2e}"


def markdown_table(rows: list) -> str:
    head = ["format", "K bits", "V bits", "bits/element", "PPL", "ΔPPL %", "mean KLD", "top-1 agreement", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["format"], f"{r['k_bits']:.2f}", f"{r['v_bits']:.2f}", f"{r['bits_per_element']:.3f}",
                 f"{r['ppl']:.4f} ± {r['ppl_stderr']:.4f}",
                 f"{r['delta_ppl_pct']:+.3f} ± {r['delta_ppl_pct_stderr']:.3f}",
                 f"{_small(r['kld_mean'])} ± {_small(r['kld_stderr'])}", f"{100 * r['top1_agreement']:.2f} %",
                 f"{r['seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(info: dict, rows: list, llama_rows: list, llama_vs_ours) -> str:
    settings = [f"model `{info['model']}`", f"text `{info['text']}`", f"ctx {info['ctx']}",
                f"{info['chunks']} chunks", f"{info['positions']} positions scored (the second half of each chunk)",
                f"{info['threads']} threads"]
    if info.get("kv_window") is not None:
        settings.append(f"--kv-window {info['kv_window']} (every format but the f16 reference)")
    if info.get("kv_codebook"):
        settings.append(f"--kv-codebook `{info['kv_codebook']}`")
    out = [
        "# KV-cache formats: perplexity and KL divergence from f16", "",
        f"{info['date']}, decollama {info['version']}: " + ", ".join(settings) + ".", "",
        markdown_table(rows), "",
        "- Reference: the f16 cache, same chunks. ΔPPL % = 100 (PPL / PPL(f16) - 1), ± its paired standard error "
        "(from the per-token NLL differences).",
        f"- mean KLD: KL(f16 || format) of the next-token distribution, mean over the scored positions ± standard "
        f"error; {info['estimator']} (see `decollama-perplexity --help`).",
        "- top-1 agreement: share of positions where the most probable token is f16's.",
        "- bits/element: the whole cache's effective bits per stored K or V element as the core reports it after the "
        "run (`kv_info()['bits_per_element']`, else the mean of K and V); K bits / V bits: per cache, mean over layers.",
        "- seconds: wall time of the format's run, the KL computation included.",
    ]
    if llama_rows:
        out += ["", "## llama.cpp (llama-cpp-python), same tokens", "",
                "ΔPPL, KLD and top-1 agreement against llama.cpp's own f16 run.", "",
                markdown_table(llama_rows)]
        if llama_vs_ours:
            k = llama_vs_ours
            out += ["", f"llama.cpp f16 against decollama f16: ΔPPL {k['delta_ppl_pct']:+.3f} ± "
                        f"{k['delta_ppl_pct_stderr']:.3f} %, mean KLD {k['kld_mean']:.6f} ± {k['kld_stderr']:.6f}, "
                        f"top-1 agreement {100 * k['top1_agreement']:.2f} %."]
    return "\n".join(out) + "\n"


def need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise _cli.UsageError("--plot needs matplotlib, which is not installed "
                              "(pip install matplotlib, or pip install \"decollama[plot]\")") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot(path: str, rows: list, llama_rows: list, title: str) -> None:
    plt = need_matplotlib()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for group, marker, color, name, offset in ((rows, "o", "tab:blue", "decollama", (5, 5)),
                                               (llama_rows, "s", "tab:orange", "llama.cpp (vs its own f16)", (5, -12))):
        if not group:
            continue
        x = [r["bits_per_element"] for r in group]
        y = [r["delta_ppl_pct"] for r in group]
        err = [r["delta_ppl_pct_stderr"] for r in group]
        ax.errorbar(x, y, yerr=err, fmt=marker, color=color, label=name, capsize=3)
        for r in group:
            ax.annotate(r["format"], (r["bits_per_element"], r["delta_ppl_pct"]), textcoords="offset points",
                        xytext=offset, fontsize=8, color=color)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    # Collapsed formats (+1000 %) and near-lossless ones (+0.1 %) on one readable axis.
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("effective bits per element (log2 scale)")
    ax.set_ylabel("ΔPPL % vs f16 (symlog)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_model_args(p)
    _cli.add_gpu_args(p)
    p.add_argument("-f", "--file", required=True, help="text file to evaluate (e.g. wiki.test.raw)")
    p.add_argument("--formats", default="f16,q8_0,q4_0",
                   help="KV-cache formats, comma-separated (default f16,q8_0,q4_0): NAME, K/V, "
                        "k:NAME,v:NAME or auto:<bits>; f16 is always the reference")
    p.add_argument("-c", "--ctx", type=_cli.positive_int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=_cli.positive_int, default=None, help="the first N chunks (default: all)")
    ppl.add_kv_extra_args(p)
    p.add_argument("-o", "--output", default=None, help="write the Markdown report here (it is printed as well)")
    p.add_argument("--plot", default=None, metavar="PNG", help="bits/element vs ΔPPL %% plot (needs matplotlib)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--llama-cpp", action="store_true",
                   help="add llama.cpp's f16/q8_0/q4_0 on the same tokens (needs llama-cpp-python)")
    p.add_argument("--save-base", default=None, metavar="FILE",
                   help="save the f16 distributions as a decollama-perplexity --kld-base file")
    p.add_argument("--kld-top-k", type=_cli.positive_int, default=ppl.KLD_TOP_K,
                   help=f"tokens kept exactly per position for the KL divergence (default {ppl.KLD_TOP_K})")
    p.add_argument("--kld-tail-samples", type=ppl.non_negative_int, default=ppl.KLD_TAIL_SAMPLES,
                   help=f"tokens sampled from the rest per position (default {ppl.KLD_TAIL_SAMPLES})")
    p.add_argument("--keep-crlf", action="store_true", help="read the text byte for byte (see decollama-perplexity)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.ctx < 4 or args.ctx % 2:
        p.error(f"--ctx must be an even number of at least 4, got {args.ctx}")
    return args


def _check_writable(path: str, flag: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _cli.UsageError(f"{flag}: no such directory: {folder}")


def _main(argv) -> int:
    args = parse_args(argv)
    _cli.existing_file(args.model, "model file")
    formats = ppl.split_kv_list(args.formats, "--formats")
    if args.plot:
        need_matplotlib()  # before the long runs, not after them
    for path, flag in ((args.output, "-o"), (args.plot, "--plot"), (args.json, "--json"), (args.save_base, "--save-base")):
        if path:
            _check_writable(path, flag)
    use_llama = args.llama_cpp
    if use_llama and not llama_cpp_available():
        _cli.warn(PROG, "--llama-cpp skipped: llama-cpp-python is not installed (pip install llama-cpp-python)")
        use_llama = False
    text = ppl.read_text(args.file, args.keep_crlf)
    progress = not args.no_progress
    first = args.ctx // 2

    def native(kv):
        return ppl.make_engine("decollama", args.model, args.ctx, args.threads, args.batch, kv,
                               n_gpu_layers=args.n_gpu_layers)

    others = [(name, ppl.kv_config(name, window=args.kv_window, codebook=args.kv_codebook))
              for name in formats if name != "f16"]
    for name, kv in others:  # every format and option checked before the long runs
        native(kv)

    engine = native(ppl.KVConfig())
    tokens = engine.tokenize(text)
    n_chunks, warning = ppl.count_chunks(len(tokens), args.ctx, args.chunks)
    if warning:
        _cli.warn(PROG, warning)
    chunks = ppl.make_chunks(tokens, args.ctx, n_chunks, engine.bos)
    identity = ppl.run_identity(args.model, engine.n_vocab, args.ctx, chunks, len(tokens))
    print(f"{PROG}: {len(tokens)} tokens, {n_chunks} chunks of {args.ctx}; f16 reference, then "
          f"{', '.join(n for n, _ in others) or 'nothing else'}", file=sys.stderr)

    recorder = ppl.KLDRecorder(engine.n_vocab, args.kld_top_k, args.kld_tail_samples)
    stats, seconds, bits = run_one(engine, chunks, first, recorder, progress)
    base = recorder.finish(ppl.base_meta(identity, engine, "f16", stats, seconds, first))
    if args.save_base:
        base.save(args.save_base)
    rows = [_row("f16", engine.name, stats, seconds, bits)]
    del engine

    for name, kv in others:
        engine = native(kv)
        comparer = ppl.KLDComparer(base)
        stats, seconds, bits = run_one(engine, chunks, first, comparer, progress)
        rows.append(_row(name, engine.name, stats, seconds, bits, comparer.result()))
        if engine.kv_plan is not None:  # auto:<bits>: the formats it chose
            plan = engine.kv_plan
            rows[-1]["kv_plan"] = {"bits": plan.bits, "k": list(plan.k), "v": list(plan.v)}
        del engine
        print(f"{PROG}: {name}: PPL {stats.ppl:.4f}, mean KLD {rows[-1]['kld_mean']:.6f}", file=sys.stderr)

    llama_rows, llama_vs_ours = [], None
    if use_llama:
        llama_base = None
        for name in LLAMA_CPP_FORMATS:
            engine = ppl.make_engine("llama-cpp", args.model, args.ctx, args.threads, args.batch,
                                     ppl.KVConfig(k=name, v=name), n_gpu_layers=args.n_gpu_layers)
            if llama_base is None:
                recorder, vs_ours = ppl.KLDRecorder(engine.n_vocab, args.kld_top_k, args.kld_tail_samples), \
                    ppl.KLDComparer(base)
                stats, seconds, bits = run_one(engine, chunks, first, _Tee(recorder, vs_ours), progress)
                llama_base = recorder.finish(ppl.base_meta(identity, engine, name, stats, seconds, first))
                llama_vs_ours = vs_ours.result()
                llama_rows.append(_row(name, engine.name, stats, seconds, bits))
            else:
                comparer = ppl.KLDComparer(llama_base)
                stats, seconds, bits = run_one(engine, chunks, first, comparer, progress)
                llama_rows.append(_row(name, engine.name, stats, seconds, bits, comparer.result()))
            del engine

    from decollama import __version__

    info = {"model": os.path.basename(args.model), "text": os.path.basename(args.file), "ctx": args.ctx,
            "chunks": n_chunks, "positions": base.n, "threads": args.threads, "kv_window": args.kv_window,
            "kv_codebook": args.kv_codebook, "date": datetime.date.today().isoformat(), "version": __version__,
            "estimator": _estimator(base)}
    md = report_markdown(info, rows, llama_rows, llama_vs_ours)
    print(md)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**info, "rows": rows, "llama_cpp_rows": llama_rows, "llama_cpp_f16_vs_decollama_f16": llama_vs_ours},
                      f, indent=1)
    if args.plot:
        plot(args.plot, rows, llama_rows, f"{info['model']}: {info['text']}, ctx {args.ctx}, {n_chunks} chunks")
    return 0


def _estimator(base) -> str:
    k, s = base.meta["top_k"], base.meta["tail_samples"]
    return (f"the top {k} tokens of f16 exactly plus {s} tokens sampled from the rest" if s
            else f"the top {k} tokens of f16 plus the rest as one bucket (a lower bound)")


def main(argv=None) -> int:
    return _cli.run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
