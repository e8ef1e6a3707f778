"""The ``fedmoe`` command line.

::

    fedmoe demo [--out DIR]                    the main job on the embedded default data
    fedmoe data make --out FILE.npz            generate a synthetic dataset
    fedmoe data stats [--input FILE.npz]       statistics, per-modality baselines, plots
    fedmoe data import deepsense ROOT --out FILE.npz
                                               convert a DeepSense 6G scenario CSV to a dataset file
    fedmoe train [--out DIR]                   centralised two-stage training of the mixture
    fedmoe sweep [--lambdas 0,0.1,1]           one mixture per λ: accuracy–cost Pareto plot and JSON
    fedmoe run [--out DIR] [--resume|--force]  federated (or split, ``--set mode=split``) training on a Flower
               [--input FILE.npz]              simulation; --input federates a dataset file
    fedmoe report RUN [--out FILE.html]        one self-contained HTML page of a run folder (finished or running)
    fedmoe scenarios                           list the built-in scenarios
    fedmoe deploy certs --out DIR              CA, SuperLink TLS certificate, SuperNode keys (real deployment)
    fedmoe deploy node-key --out FILE          one SuperNode authentication key pair
    fedmoe deploy check --superlink H:P --ca F TLS handshake with the SuperLink, its certificate checked for H
    fedmoe deploy local [--nodes N]            SuperLink + N SuperNodes on 127.0.0.1 (TLS, authentication, a private
                                               network), `flwr run`

Every command takes ``--scenario NAME|FILE.toml`` and ``--set key.path=value`` (repeatable)
to override single config values. A bad config value, scenario, path or option prints one
line naming the field (or the option, or the path) and what is allowed, exits with status 2
(no traceback) and writes nothing: commands check their input before they start and remove
an output folder they made if they fail (a bad option type is argparse's usage and error
lines, also status 2). A failure while running (a file system error, a deployment that
fails) prints one line and exits with status 1. Bad input is a :class:`fedmoe.errors.UsageError`
(or an unknown registered name, a missing file, a value pydantic refuses); any other exception
is not the user's doing and shows its traceback. ``fedmoe run --ray-address HOST:PORT``
attaches the simulation to a running Ray cluster (default: ``$RAY_ADDRESS``, else a local Ray);
a cluster that does not answer prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from fedmoe import __version__
from fedmoe.arguments import int_at_least, parse_assignment_pair, parse_lambdas, parse_latlon, parse_modalities
from fedmoe.config import FedMoEConfig, with_absolute_files
from fedmoe.errors import UsageError
from fedmoe.files import check_file_target, check_folder_target, output_folder, write_atomic
from fedmoe.overrides import parse_overrides
from fedmoe.registry import UnknownNameError

EXIT_USAGE = 2
EXIT_FAILURE = 1  # the command was fine, running it failed (unreachable Ray head, deployment error)


def config_from_args(args: argparse.Namespace) -> FedMoEConfig:
    """The scenario named by ``--scenario`` with the ``--set`` overrides applied."""
    from fedmoe.scenarios import load_scenario

    return load_scenario(args.scenario, parse_overrides(args.set or []))


def check_generation(cfg: FedMoEConfig, num_samples: int | None) -> None:
    """The samples a command generates at once (``--num-samples``, else ``data.num_samples``) must fit
    in memory (:func:`fedmoe.data.synthetic.check_generation_fits`), checked before any work."""
    from fedmoe.data.synthetic import check_generation_fits

    what = "--num-samples" if num_samples is not None else "data.num_samples"
    n = cfg.data.num_samples if num_samples is None else num_samples
    check_generation_fits(cfg.data, cfg.wireless.channel, n, f"{what}={n}")


# --------------------------------------------------------------------------- commands


def cmd_data_make(args: argparse.Namespace) -> int:
    from fedmoe.data.samples import ISACSamples
    from fedmoe.data.synthetic import generate

    cfg = config_from_args(args)
    out = check_file_target(ISACSamples.file_path(args.out))
    check_generation(cfg, args.num_samples)
    t0 = time.perf_counter()
    samples = generate(cfg.data, cfg.wireless.channel, args.num_samples, args.seed, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    path = samples.save(out)
    print(f"wrote {len(samples)} samples ({samples.nbytes / len(samples) / 1e3:.1f} kB/sample, "
          f"{len(samples) / elapsed:,.0f} samples/s) to {path}")
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    """A DeepSense 6G scenario CSV (and the files it names) as a dataset file, with a progress bar."""
    from tqdm.auto import tqdm

    from fedmoe.config import MODALITIES
    from fedmoe.data.deepsense import load_deepsense_scenario
    from fedmoe.data.samples import ISACSamples

    cfg = config_from_args(args)
    out = check_file_target(ISACSamples.file_path(args.out))
    t0 = time.perf_counter()
    with tqdm(total=0, unit="file", desc=f"reading {Path(args.root).name}", disable=args.quiet, leave=False) as bar:
        samples = load_deepsense_scenario(
            args.root, args.csv, args.modalities or MODALITIES, cfg.wireless.channel.codebook_size,
            sensors=cfg.data.sensors, columns=dict(args.column or []), origin=args.origin,
            missing_files=args.missing_files, progress=bar)
    if len(samples) == 0:
        raise UsageError(f"{args.root}: no samples to write (the CSV has no data rows)")
    path = samples.save(out)
    labelled = "labelled" not in samples.conditions or bool(samples.conditions["labelled"].all())
    kinds = ", ".join(f"{m} {int(samples.has(m).sum())}" for m in samples.inputs)
    print(f"wrote {len(samples)} samples ({kinds} present; "
          f"{'beam labels' if labelled else 'UNLABELLED: for inference only'}) in "
          f"{time.perf_counter() - t0:.1f} s to {path}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from fedmoe.data import plots
    from fedmoe.data.samples import ISACSamples
    from fedmoe.data.stats import dataset_summary, format_baseline_table, modality_baselines
    from fedmoe.data.synthetic import generate, train_test_split

    cfg = config_from_args(args)
    out = check_folder_target(args.out)
    if args.input:
        samples = ISACSamples.load(args.input)
    else:
        check_generation(cfg, args.num_samples)
        samples = generate(cfg.data, cfg.wireless.channel, args.num_samples, args.seed, progress=not args.quiet)
    num_beams = cfg.wireless.channel.codebook_size
    summary = dataset_summary(samples)
    report: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "summary": summary}
    print(f"{summary['num_samples']} samples, {summary['bytes_per_sample'] / 1e3:.1f} kB/sample, "
          f"blocked {summary['blocked_fraction']:.1%}, UAV {summary['uav_fraction']:.1%}, "
          f"beam entropy {summary['beam_entropy_bits']:.2f} bit")
    print("uplink bits per sample: " + ", ".join(f"{m} {b:,}" for m, b in summary["bits_per_sample"].items()))
    results = None
    if args.epochs > 0:
        train, test = train_test_split(samples, cfg.data.test_fraction, cfg.data.seed)
        results = modality_baselines(train, test, num_beams, epochs=args.epochs, seed=cfg.data.seed,
                                     progress=not args.quiet)
        report["baselines"] = {
            "model": "per-modality conv/MLP encoders, late fusion, beam classifier (see fedmoe.data.stats)",
            "epochs": args.epochs, "train_samples": len(train), "test_samples": len(test),
            "results": [r.as_dict() for r in results],
        }
        print("\nbeam prediction baselines (test split):")
        print(format_baseline_table(results))
    with output_folder(out):
        figures = [plots.plot_label_histograms(samples, out / "labels.png", num_beams),
                   plots.plot_examples(samples, out / "examples.png")]
        if results is not None:
            figures.append(plots.plot_baselines(results, out / "baselines.png"))
        write_atomic(out / "stats.json", json.dumps(report, indent=2).encode())
    print(f"\nwrote {out / 'stats.json'} and " + ", ".join(str(f) for f in figures))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Centralised two-stage training of the mixture on the synthetic data; report and plots."""
    from fedmoe.centralised import make_split, run_centralised
    from fedmoe.models.builder import check_model_names
    from fedmoe.models.plots import plot_diagnostics

    cfg = config_from_args(args)
    out = check_folder_target(args.out)
    check_model_names(cfg.model)
    check_generation(cfg, args.num_samples)
    split = make_split(cfg, args.num_samples, args.seed, progress=not args.quiet)
    run = run_centralised(cfg, split, progress=not args.quiet)
    summary = run.summary
    report = {"config": cfg.model_dump(mode="json"), "summary": summary,
              "epochs": [r.__dict__ for r in run.reports]}
    with output_folder(out):
        write_atomic(out / "report.json", json.dumps(report, indent=2).encode())
        plot_diagnostics(run.reports, summary["experts"], out / "diagnostics.png")
    main = cfg.train.score.main
    sc = summary["scores"]
    print(f"test accuracy ({main}) {sc[main]['all']:.1%} (LoS {sc[main]['los']:.1%}, "
          f"blocked {sc[main]['blocked']:.1%}; "
          f"top-1 {sc['top1']['all']:.1%}, top-{cfg.train.score.top_k} {sc['topk']['all']:.1%}, power ratio "
          f"{sc['power_ratio_db']['all']:.2f} dB); {summary['mean_flops']:,.0f} FLOPs/sample; "
          f"costly modality chosen for {summary['costly_rate']['los']:.0%} of LoS and "
          f"{summary['costly_rate']['blocked']:.0%} of blocked samples")
    print(f"wrote {out / 'report.json'} and {out / 'diagnostics.png'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train one mixture per λ on the same data; JSON table and Pareto plot."""
    from fedmoe.centralised import make_split
    from fedmoe.models.builder import check_model_names
    from fedmoe.pareto import format_table, plot_pareto, sweep_lambda

    cfg = config_from_args(args)
    out = check_folder_target(args.out)
    check_model_names(cfg.model)
    check_generation(cfg, args.num_samples)
    split = make_split(cfg, args.num_samples, args.seed, progress=not args.quiet)
    rows = sweep_lambda(cfg, split, args.lambdas, progress=not args.quiet)
    with output_folder(out):
        write_atomic(out / "sweep.json", json.dumps({"config": cfg.model_dump(mode="json"), "points": rows},
                                                    indent=2).encode())
        figure = plot_pareto(rows, out / "pareto.png", f"λ sweep, gate {cfg.model.gate}, scenario {cfg.name}")
    print(format_table(rows))
    print(f"wrote {out / 'sweep.json'} and {figure}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Federated training on a Flower simulation (Ray backend); run folder with metrics and plots."""
    from fedmoe.data.trace_formats import checked_trace
    from fedmoe.scenarios import resolve_scenario
    from fedmoe.simulation import run_federated
    from fedmoe.strategies.modes import mode_of

    cfg = config_from_args(args)
    if args.input is not None:
        cfg = with_input(cfg, args.input)
    cfg = checked_trace(with_absolute_files(cfg))
    out = Path(args.out)
    mode = mode_of(cfg)
    print(f"fedmoe {__version__}: {mode.describe(cfg)}")
    if args.resume:
        print(f"resuming the run in {out} after its last complete round")
    run = run_federated(cfg, out, progress=not args.quiet, scenario_file=resolve_scenario(args.scenario),
                        verbose=args.verbose, ray_address=args.ray_address, resume=args.resume, force=args.force)
    print(mode.summarise(run, out))
    return 0


def with_input(cfg: FedMoEConfig, path: str) -> FedMoEConfig:
    """``cfg`` with ``data.input`` set to the dataset file ``path``, made absolute with the other file settings
    (:func:`fedmoe.config.with_absolute_files`: every process of the run opens it, whatever its working folder)."""
    from fedmoe.config import parse_config

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such dataset file (--input)")
    data = cfg.model_dump(mode="json")
    data["data"]["input"] = str(file)
    return with_absolute_files(parse_config(data, source="--input"))


def cmd_demo(args: argparse.Namespace) -> int:
    print(f"fedmoe {__version__} demo: the embedded synthetic ISAC dataset (scenario {args.scenario!r})")
    return cmd_data_stats(args)


def cmd_deploy_certs(args: argparse.Namespace) -> int:
    """CA, SuperLink certificate and SuperNode key pairs for a real deployment."""
    from fedmoe.deploy.pki import write_deployment_pki

    check_folder_target(args.out)
    paths = write_deployment_pki(Path(args.out), args.hosts, args.nodes, args.days, args.force)
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    print("ca.key signs certificates: keep it off the SuperLink and the SuperNodes; *.key files are private "
          "(mode 0600)")
    return 0


def cmd_deploy_node_key(args: argparse.Namespace) -> int:
    """One SuperNode key pair (made on the SuperNode's own machine, only the .pub leaves it)."""
    from fedmoe.deploy.pki import write_supernode_key

    check_file_target(args.out)
    private, public = write_supernode_key(Path(args.out), args.force)
    print(f"wrote {private} (private, keep it on this machine) and {public} (register it on the SuperLink)")
    return 0


def cmd_deploy_check(args: argparse.Namespace) -> int:
    """A TLS handshake with the SuperLink, verified with the CA and the address's host name."""
    from fedmoe.deploy.reach import check_superlink

    names = check_superlink(args.superlink, Path(args.ca), args.timeout)
    print(f"SuperLink {args.superlink}: TLS verified, certificate names {names}")
    return 0


def cmd_deploy_local(args: argparse.Namespace) -> int:
    """A SuperLink and N SuperNodes on 127.0.0.1 with TLS and authentication; ``flwr run`` of this project."""
    import signal

    from fedmoe.deploy.local import check_deploy_local, deploy_local, summarise
    from fedmoe.deploy.netns import enter_private_network, in_private_network, run_in_private_network

    check_folder_target(args.out)  # deploy_local checks the scenario and the run before any process starts
    if args.network == "private":
        if not in_private_network():  # check here (one line, nothing started), then run again inside one
            check_deploy_local(Path(args.out), args.scenario, args.set or [], args.nodes,
                               None if args.app is None else Path(args.app), args.timeout, args.force)
            return run_in_private_network([sys.executable, "-m", "fedmoe.cli", *args.argv])
        enter_private_network()

    def _terminate(signum, frame):  # SIGTERM: leave through the launcher's clean-up, like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = deploy_local(Path(args.out), args.scenario, args.set or [], args.nodes,
                              None if args.app is None else Path(args.app), args.timeout, args.force,
                              stream=not args.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summarise(result))
    return 0


def cmd_link_budget(args: argparse.Namespace) -> int:
    from fedmoe.wireless.link_budget import format_link_budget, link_budget_rows

    print(format_link_budget(link_budget_rows(config_from_args(args).wireless)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedmoe.federated.html_report import write_report

    out = None if args.out is None else check_file_target(args.out)
    print(f"wrote {write_report(Path(args.run), out)}")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from fedmoe.scenarios import SCENARIOS

    for name in SCENARIOS.names():
        print(f"{name:<20} {SCENARIOS.get(name)}")
    return 0


# --------------------------------------------------------------------------- parser


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default="default", metavar="NAME|FILE",
                   help="built-in scenario name (looked up first), or a path to a TOML config: one that contains "
                        "a '/' or ends in .toml (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config value, e.g. --set data.scene.num_blockers=4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-samples", type=int_at_least(1), default=None,
                   help="samples to generate (default: data.num_samples)")
    p.add_argument("--seed", type=int_at_least(0), default=None, help="generator seed (default: data.seed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedmoe",
                                     description="Federated multimodal mixture of experts over wireless.")
    parser.add_argument("--version", action="version", version=f"fedmoe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo",
                          help="the main job on the embedded default data (dataset, statistics, baselines, plots)")
    _config_options(demo)
    _generation_options(demo)
    demo.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int_at_least(0), default=10,
                      help="baseline training epochs; 0 skips the baselines")
    demo.set_defaults(func=cmd_demo, input=None)

    data = sub.add_parser("data", help="make or inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    make = data_sub.add_parser("make", help="generate the synthetic multimodal ISAC dataset into a .npz file")
    _config_options(make)
    _generation_options(make)
    make.add_argument("--out", required=True, help="output .npz file")
    make.set_defaults(func=cmd_data_make)
    imp = data_sub.add_parser("import", help="convert a real dataset (DeepSense 6G scenario CSV) to a .npz file")
    _config_options(imp)
    imp.add_argument("source", choices=("deepsense",), help="the dataset's kind")
    imp.add_argument("root", help="the scenario folder (or its CSV)")
    imp.add_argument("--out", required=True, help="output .npz file")
    imp.add_argument("--csv", default=None, metavar="NAME",
                     help="the CSV inside ROOT, e.g. scenario5_dev_train.csv or future-1/x.csv (default: the only "
                          "scenarioN[_dev].csv, else the only *.csv)")
    imp.add_argument("--modalities", type=parse_modalities, default=None, metavar="M1,M2,...",
                     help="inputs to load (default: every modality the CSV has)")
    imp.add_argument("--column", type=parse_assignment_pair, action="append", metavar="ROLE=COLUMN",
                     help="the CSV column of a role, e.g. --column beam=beam_index_3 (repeatable)")
    imp.add_argument("--origin", type=parse_latlon, default=None, metavar="LAT,LON",
                     help="origin of the local frame (default: unit1_loc, else unit1/GPS_data/gps_location.txt)")
    imp.add_argument("--missing-files", choices=("raise", "absent"), default="raise",
                     help="a referenced file that does not exist: an error, or that sample lacks the modality "
                          "(default: %(default)s)")
    imp.set_defaults(func=cmd_data_import)
    stats = data_sub.add_parser("stats", help="dataset statistics, per-modality baselines by condition, plots")
    _config_options(stats)
    _generation_options(stats)
    stats.add_argument("--input", help="a .npz dataset from `fedmoe data make` (default: generate one)")
    stats.add_argument("--out", default="runs/stats", help="output folder (default: %(default)s)")
    stats.add_argument("--epochs", type=int_at_least(0), default=10,
                       help="baseline training epochs; 0 skips the baselines")
    stats.set_defaults(func=cmd_data_stats)

    tr = sub.add_parser("train", help="centralised two-stage training of the mixture of experts (report, plots)")
    _config_options(tr)
    _generation_options(tr)
    tr.add_argument("--out", default="runs/train", help="output folder (default: %(default)s)")
    tr.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="train one mixture per λ of the resource-aware loss; Pareto plot and JSON")
    _config_options(sw)
    _generation_options(sw)
    sw.add_argument("--lambdas", type=parse_lambdas, default=[0.0, 0.03, 0.1, 0.3, 1.0], metavar="L1,L2,...",
                    help="comma-separated λ values (default: 0,0.03,0.1,0.3,1)")
    sw.add_argument("--out", default="runs/sweep", help="output folder (default: %(default)s)")
    sw.set_defaults(func=cmd_sweep)

    run = sub.add_parser("run",
                         help="federated or split-learning training on a Flower simulation (Ray backend): the main job")
    _config_options(run)
    run.add_argument("--out", default="runs/run", help="run folder (default: %(default)s)")
    run.add_argument("--input", default=None, metavar="FILE.npz",
                     help="federate this dataset file (`fedmoe data make`, `fedmoe data import`) instead of "
                          "generated data: a test set is held out and the rest split among the devices by the "
                          "partition settings (partition.group=sequence keeps each seq_index sequence on one device); "
                          "sets data.input")
    run.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own log lines")
    run.add_argument("--ray-address", metavar="HOST:PORT", default=None,
                     help="run the virtual clients on the Ray cluster whose head is at HOST:PORT (`ray start --head "
                          "--port PORT`); run this on a node of the cluster. Default: $RAY_ADDRESS if set, else a "
                          "local Ray for this run ('local' forces that)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out after its last complete round (federated mode; same scenario "
                            "and --set values): its state is saved there after every round")
    again.add_argument("--force", action="store_true",
                       help="run into a non-empty --out, replacing an earlier run's outputs there (checkpoints/, "
                            "client_state/, metrics.json, plots, ...; other files are kept). Without it, or "
                            "--resume, a non-empty --out is refused")
    run.set_defaults(func=cmd_run)

    lbt = sub.add_parser("link-budget", help="the uplink link budget (distance x LoS/NLoS -> SNR, rate) as a table")
    _config_options(lbt)
    lbt.set_defaults(func=cmd_link_budget)

    rep = sub.add_parser("report", help="one self-contained HTML page of a run folder: summary, plots, rounds, "
                                        "devices, expert usage, configuration (works while the run goes)")
    rep.add_argument("run", metavar="RUN", help="the run folder (fedmoe run --out, or a deployment's run/ folder)")
    rep.add_argument("--out", default=None, metavar="FILE.html", help="where to write the page (default: "
                                                                     "RUN/report.html)")
    rep.set_defaults(func=cmd_report)

    scen = sub.add_parser("scenarios", help="list the built-in scenarios")
    scen.set_defaults(func=cmd_scenarios)

    dep = sub.add_parser("deploy", help="real deployment: certificates and keys, SuperLink + SuperNodes on 127.0.0.1")
    dep_sub = dep.add_subparsers(dest="deploy_command", metavar="SUBCOMMAND", required=True)
    certs = dep_sub.add_parser("certs", help="CA, SuperLink TLS certificate and SuperNode key pairs (OpenSSH ECDSA)")
    certs.add_argument("--out", required=True, help="output folder")
    certs.add_argument("--hosts", default="localhost,127.0.0.1", metavar="H1,H2,...",
                       help="host names and IP addresses SuperNodes use to reach the SuperLink: the certificate's "
                            "subject alternative names (default: %(default)s)")
    certs.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs to make (default: %(default)s)")
    certs.add_argument("--days", type=int, default=365, help="validity of the certificates (default: %(default)s)")
    certs.add_argument("--force", action="store_true", help="overwrite existing files")
    certs.set_defaults(func=cmd_deploy_certs)
    nkey = dep_sub.add_parser("node-key", help="one SuperNode key pair: FILE (private) and FILE's .pub")
    nkey.add_argument("--out", required=True, help="private key file; the public key is written next to it as .pub")
    nkey.add_argument("--force", action="store_true", help="overwrite existing files")
    nkey.set_defaults(func=cmd_deploy_node_key)
    chk = dep_sub.add_parser("check", help="is the SuperLink reachable at HOST:PORT with a certificate the CA signed "
                                           "for HOST? (one line; exit 1 if not)")
    chk.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the address SuperNodes and flwr dial")
    chk.add_argument("--ca", required=True, help="the CA certificate (ca.crt)")
    chk.add_argument("--timeout", type=float, default=10.0, help="longest wait for an answer, s (default: %(default)g)")
    chk.set_defaults(func=cmd_deploy_check)
    loc = dep_sub.add_parser(
        "local", help="SuperLink + N SuperNodes on 127.0.0.1 with TLS and SuperNode "
                      "authentication, then `flwr run` of this project; stops everything after",
        description="A SuperLink and N SuperNodes on 127.0.0.1 with TLS and SuperNode authentication, then `flwr run` "
                    "of this project; every process is stopped afterwards. What this leaves open: Flower 1.41 "
                    "(open source) authenticates nobody on the SuperLink's Control API, so whoever can connect to "
                    "its port can register SuperNode keys and run a ServerApp of their own as you (account "
                    "authentication is Flower Enterprise only). With --network private (the default) every process "
                    "runs in a network namespace of its own, whose 127.0.0.1 no other user of the machine can "
                    "reach; --network shared uses the machine's 127.0.0.1, where every local user can. The "
                    "folder (--out) is 0700 and its pki/ files 0600 either way.")
    _config_options(loc)
    loc.add_argument("--nodes", type=int, default=None,
                     help="SuperNodes, one per device (default and required value: partition.num_devices)")
    loc.add_argument("--out", default="runs/deploy", help="deployment folder: certificates, logs, run folder "
                                                          "(default: %(default)s)")
    loc.add_argument("--app", default=None, help="the Flower app to run (default: this fedmoe source folder)")
    loc.add_argument("--timeout", type=float, default=3600.0, help="longest wait for the run, s (default: %(default)g)")
    loc.add_argument("--force", action="store_true", help="replace an earlier deployment in --out")
    loc.add_argument("--network", choices=("private", "shared"), default="private",
                     help="private: a network namespace of its own (unshare), unreachable by other users; shared: "
                          "the machine's 127.0.0.1, where any local user can reach the unauthenticated Control API "
                          "(default: %(default)s)")
    loc.set_defaults(func=cmd_deploy_local)
    return parser


def _runtime_errors() -> tuple[type[BaseException], ...]:
    """Failures of ``fedmoe deploy`` reported in one line with exit status 1 (not usage errors)."""
    from fedmoe.deploy.flower import FlowerError
    from fedmoe.deploy.local import DeployError
    from fedmoe.deploy.netns import PrivateNetworkError
    from fedmoe.deploy.processes import ProcessError
    from fedmoe.deploy.reach import ReachError

    return DeployError, FlowerError, ProcessError, PrivateNetworkError, ReachError


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a config error with several problems joins them with ``;``)."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what a command that runs itself again (deploy local, in a private network) passes on
    try:
        return int(args.func(args))
    except (UsageError, ValidationError, FileNotFoundError, UnknownNameError) as err:  # the user's input
        if args.debug:
            raise
        print(f"fedmoe: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, OSError, *_runtime_errors()) as err:  # an unreachable Ray head, a failed deployment
        if args.debug:
            raise
        print(f"fedmoe: error: {one_line(err)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("fedmoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
