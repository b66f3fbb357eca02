"""The paper's tables as data: rows (model, config, variant, the paper's figures) x labelled fractions.

Plain data and path arithmetic, no torch: the command line reads the table names from here, so
``sslandmarks --help`` stays fast. :mod:`~sslandmarks.runner` trains the cells, :mod:`~sslandmarks.report`
writes the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Row:
    name: str  # spelled as in the paper, e.g. "Seq-MT (L+ELT+A)"
    config: str  # file in configs/
    variant: str
    paper: dict[float, float] = field(default_factory=dict)  # labelled % -> the paper's figure
    paper_accuracy: dict[float, float] = field(default_factory=dict)  # labelled % -> the paper's class accuracy


@dataclass(frozen=True)
class Protocol:
    """How every cell of a table is trained: ``overrides`` of each row's config (nested dict; ``by_config``:
    further ones for the rows of one config file, e.g. the widths of a baseline's extra layers) and the number
    of seeds per labelled fraction (``seeds``: one count for every column, or labelled % -> count)."""

    overrides: dict = field(default_factory=dict)
    by_config: dict[str, dict] = field(default_factory=dict)  # config file -> overrides of its rows only
    seeds: int | dict[float, int] = 5
    note: str = ""  # said in table.md: what was scaled down, and why
    rows: tuple[str, ...] = ()  # the rows this protocol trains (row names); () = every row of the table
    fractions: tuple[float, ...] = ()  # the labelled % columns it trains; () = every column

    def seeds_at(self, pct: float) -> int:
        return self.seeds if isinstance(self.seeds, int) else self.seeds.get(pct, 1)


@dataclass(frozen=True)
class Claim:
    """An ordering the paper reports: row ``a`` <= ``factor`` x row ``b`` at each of ``fractions`` (strictly
    below when ``factor`` is 1), on the table's metric (lower is better). ``table.md`` says where it held."""

    a: str
    b: str
    fractions: tuple[float, ...]
    factor: float = 1.0

    def holds(self, a: float, b: float) -> bool:
        """Whether errors ``a`` (of row ``a``) and ``b`` keep the ordering."""
        return a < b if self.factor == 1.0 else a <= self.factor * b


PAPER = Protocol(note="The configs as they are (the paper's tables S5-S9 where they say, 5 seeds per cell).")


@dataclass(frozen=True)
class Table:
    rows: tuple[Row, ...]
    fractions: tuple[float, ...]
    metric: str  # key of metrics.json that is tabulated
    unit: str
    title: str
    no_full: frozenset[str] = frozenset()  # rows without the 100 % column (ELT: no unlabelled images)
    quick: dict = field(default_factory=dict)  # overrides for --quick
    accuracy: str | None = None  # a class head whose test accuracy is tabulated too (rows trained with A)
    compare: tuple[str, str, float] | None = None  # two rows drawn on test images at one fraction (figure.png)
    note: str = ""  # said under the table (e.g. where the data differ from the paper's)
    also: tuple[tuple[str, str, bool], ...] = ()  # more metrics: (metrics.json key, dotted; label; lower is better)
    protocols: dict[str, Protocol] = field(default_factory=lambda: {"paper": PAPER})  # the first is the default
    claims: tuple[Claim, ...] = ()  # the paper's orderings, checked in table.md
    reference: str = "ground truth"  # what the annotated points are, as figure.png's legend names them

    @property
    def has_paper(self) -> bool:
        return any(row.paper for row in self.rows)


def under(table: Table, protocol: Protocol) -> Table:
    """``table`` as ``protocol`` trains it: only the protocol's rows and columns (all when it names none)."""
    rows = tuple(r for r in table.rows if not protocol.rows or r.name in protocol.rows)
    fractions = tuple(f for f in table.fractions if not protocol.fractions or f in protocol.fractions)
    return replace(table, rows=rows, fractions=fractions)


def _row(name: str, config: str, variant: str, paper: list[float | None], fractions,
         paper_accuracy: list[float | None] = ()) -> Row:
    return Row(name, config, variant, {f: p for f, p in zip(fractions, paper) if p is not None},
               {f: p for f, p in zip(fractions, paper_accuracy) if p is not None})


BLOCKS_FRACTIONS = (1.0, 5.0, 10.0, 20.0, 50.0, 100.0)
# The protocol of results/blocks-table1, sized for a 2-core CPU (about 10 hours for the grid): the same
# budget for every row (3,000 steps, the best of 12 validation checkpoints), Adam at a peak lr of 3e-3 after
# 100 warm-up steps (chosen on validation: at 5 % labels Seq-MT (L+ELT+A) reached 2.35 px at step 500 where
# lr 1e-3 without warm-up was at 3.18 px), and bfloat16 autocast where the CPU multiplies bfloat16 natively
# (AMX-BF16; on validation it tracked float32 step for step: 2.39 vs 2.35 px at step 500), float32 elsewhere
# (``precision: auto``: on an AVX2 CPU bfloat16 is emulated, 20x slower than float32). Each cell records its
# precision and machine in metrics.json.
BLOCKS_CPU = Protocol(
    overrides={"train": {"steps": 3000, "lr": 0.003, "warmup_steps": 100, "precision": "auto",
                         "eval_every": 250, "log_every": 50, "checkpoint_every": 250}},
    seeds={1.0: 3, 5.0: 3, 10.0: 3, 20.0: 1, 50.0: 1, 100.0: 1},
    note="CPU protocol: 3,000 steps of 16 labelled + 32 unlabelled images for every row (the best of 12 "
         "validation checkpoints on the 3,200 validation images), Adam with a 100-step warm-up to lr 3e-3 then "
         "cosine decay, bfloat16 autocast on CPUs with AMX-BF16 (float32 elsewhere); 3 seeds at 1, 5 and 10 %, "
         "1 elsewhere.",
)
BLOCKS_TABLE1 = Table(
    rows=tuple(
        _row(n, c, v, p, BLOCKS_FRACTIONS)
        for n, c, v, p in [
            ("Seq-MT (L)", "blocks.yaml", "L", [8.33, 3.95, 3.35, 1.98, 1.19, 0.44]),
            ("Seq-MT (L+A)", "blocks.yaml", "L+A", [8.02, 3.45, 3.20, 1.67, 1.05, 0.38]),
            ("Seq-MT (L+ELT)", "blocks.yaml", "L+ELT", [6.42, 1.94, 1.37, 1.16, 0.85, None]),
            ("Seq-MT (L+ELT+A)", "blocks.yaml", "L+ELT+A", [6.25, 1.70, 1.26, 1.07, 0.74, None]),
            ("Comm-MT (L)", "blocks_commmt.yaml", "L", [12.89, 11.56, 10.72, 9.39, 5.04, 3.41]),
            ("Comm-MT (L+A)", "blocks_commmt.yaml", "L+A", [12.28, 11.19, 10.36, 9.01, 4.21, 2.97]),
            ("Heatmap-MT (L)", "blocks_heatmapmt.yaml", "L", [10.09, 6.59, 5.27, 3.82, 2.78, 2.01]),
            ("Heatmap-MT (L+A)", "blocks_heatmapmt.yaml", "L+A", [9.27, 6.35, 5.62, 3.75, 3.14, 2.23]),
        ]
    ),
    fractions=BLOCKS_FRACTIONS,
    metric="mean_error_px",
    unit="px",
    title="Blocks, Table 1: test landmark error (pixels) vs percentage of images with labelled landmarks",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),
    # a smoke run of the whole grid in under 15 minutes on 2 cores, also where it trains in float32 (AVX2): 20
    # steps, two validations of 200 images and a test of 400 per cell took 15:52 on an idle 2-core AVX2 EPYC
    quick={"data": {"n_val": 100, "n_test": 200},
           "train": {"steps": 10, "eval_every": 10, "log_every": 5, "checkpoint_every": 10}},
    protocols={"cpu": BLOCKS_CPU, "paper": PAPER},
    claims=(Claim("Seq-MT (L+ELT+A)", "Seq-MT (L+ELT)", BLOCKS_FRACTIONS[:4], 1.05),  # the 1-20 % columns
            Claim("Seq-MT (L+ELT)", "Seq-MT (L)", BLOCKS_FRACTIONS[:4]),
            Claim("Seq-MT (L)", "Heatmap-MT (L)", BLOCKS_FRACTIONS[:4]),
            Claim("Heatmap-MT (L)", "Comm-MT (L)", BLOCKS_FRACTIONS[:4]),
            Claim("Seq-MT (L+ELT+A)", "Seq-MT (L)", (5.0,), 0.5)),
)
REAL_DATA_QUICK = {"train": {"steps": 40, "eval_every": 20, "log_every": 20, "checkpoint_every": 20}}
HGR1_FRACTIONS = (5.0, 10.0, 20.0, 50.0, 100.0)
# The protocol of results/hgr1, sized for a 2-core CPU without bfloat16 units (at most 6 hours for the grid): Table
# S8's 9x9 stacks at width 16 instead of 64 (Comm-MT's and Heatmap-MT's 1x1 layers too), the recipe of the Blocks
# CPU protocol (Adam, 100 warm-up steps to lr 3e-3, cosine), chosen on the validation subjects (id11, id12) at 5 %
# labels, seed 0 (validation mean error in pixels / NME %, best checkpoint):
# - width 16, 1,500 steps (bfloat16 on an AMX CPU): L 53.0 / 79.8, L+A 53.2, L+ELT 50.7 (L stopped improving
#   by 1,500 steps: 80.0 % NME after 4,000; peak lr 5e-3, mirrored hands and ELT weight 1 were no better);
# - width 8, 1,000 steps (a third of the cost): L 54.2 / 77.2, L+ELT+A 57.8 / 84.3: ELT and gestures hurt there;
# - width 16, 450 steps: L 57.0 / 81.9, L+ELT+A 53.6 / 78.7: they help, so width 16 it is.
# In float32 on a 2-core AVX2 EPYC (one thread a run, through the FFT where train.conv auto chose it) 450 steps cost
# L 299 and L+ELT+A 1,222 CPU-seconds, so 1,500 steps of the 52 cells would take ~40 CPU-hours; 400 steps (~11
# CPU-hours, ~5.5 hours of the machine with both cores busy) fit the budget. Since then the FFT convolution's
# backward is written out (fftconv._FFTConv: a width-16 L+ELT+A step 1.9-2.0 -> 1.05 s), which should bring the
# grid to ~6 CPU-hours (an estimate; table.md counts what the cells took). On a CPU with AMX-BF16 (bfloat16
# autocast) a cell costs ~1/5 of that.
# The 400-step grid ran 24 cells (1.8 CPU-hours for the first 18, ~0.1 per cell: ~5.2 for all 52) and was stopped:
# 19 of them had their best validation checkpoint at the last step, still falling (Seq-MT (L), validation NME % at steps
# 100-400: 100 % labels 101 / 79 / 92 / 69.5, 50 % 101 / 72 / 71 / 63; the 1,500-step grid had reached 47.9 at 100 %),
# and with more labels no better (validation 69.5 % at 100 %, 63 % at 50 %): 800 steps, the most that fits the
# 6-hour budget, with a validation every 100. The first 800-step cells took 2.3x their 400-step CPU time (Seq-MT (L)
# 5 %, seed 0: 292 vs 129 CPU-s; (L+A) 702 vs 302), so ~12 CPU-hours for the grid, ~6 hours of the machine.
HGR1_CPU = Protocol(
    overrides={"model": {"width": 16},
               "train": {"steps": 800, "lr": 0.003, "warmup_steps": 100, "precision": "auto",
                         "eval_every": 100, "log_every": 50, "checkpoint_every": 100}},
    by_config={"hgr1_commmt.yaml": {"model": {"pointwise": [16, 16]}},
               "hgr1_heatmapmt.yaml": {"model": {"pointwise": [16, 16]}}},
    seeds={5.0: 3, 10.0: 3, 20.0: 1, 50.0: 1, 100.0: 1},
    rows=("Seq-MT (L)", "Seq-MT (L+A)", "Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)", "Comm-MT (L+A)", "Heatmap-MT (L+A)"),
    note="CPU protocol: Table S8's networks at width 16 (the paper: 64), 800 steps of 16 labelled + 32 other "
         "hands for every row (the best of 8 validation checkpoints on subjects id11 and id12), Adam with a 100-step "
         "warm-up to lr 3e-3 then cosine decay, bfloat16 autocast on CPUs with AMX-BF16 (float32 elsewhere); the six "
         "rows the CPU budget affords (Comm-MT and "
         "Heatmap-MT with the gestures, as their (L+A) rows); 3 seeds at 5 and 10 %, 1 elsewhere. These runs are "
         "short: hand21, the Seq-MT (L) net trained 3,000 steps on the training and validation subjects, reaches "
         "29.03 % on the test subjects (its model card), and `--protocol cpu-long` trains the 5 % claim's two rows "
         "3,000 steps (results/hgr1-long).",
)
# The 800-step grid left Seq-MT (L+ELT+A) at 0.94x Seq-MT (L) at 5 % (62.07 vs 65.69 %, 3 seeds; the paper: 0.77x),
# and on Blocks ELT pulled away from L only after ~1,000 steps (../shared/notes/calibration.md); hand21, the same net
# trained 3,000 steps, reached 29 % where the 800-step 100 % cells stayed at 44-45 %. This protocol asks whether the
# gap opens with training length: the two rows of the claim at 5 %, 3,000 steps, 3 seeds, everything else as HGR1_CPU
# (~4 CPU-hours in float32 on a 2-core AVX2 EPYC, from the 800-step cells' logged time: beyond the table's 6-hour
# budget, so a protocol of its own). It did not: at 3,000 steps (3 seeds, 3.35 CPU-hours as logged) Seq-MT (L) 59.04
# and (L+ELT+A) 55.62 % test NME, 0.94x again (800 steps: 65.69 and 62.07); both rows gained ~6 points with length.
HGR1_CPU_LONG = replace(
    HGR1_CPU,
    overrides={**HGR1_CPU.overrides,
               "train": {**HGR1_CPU.overrides["train"], "steps": 3000, "eval_every": 250, "checkpoint_every": 250}},
    seeds=3, rows=("Seq-MT (L)", "Seq-MT (L+ELT+A)"), fractions=(5.0,),
    note="CPU protocol, long runs at 5 % only: HGR1_CPU (Table S8's networks at width 16) trained 3,000 steps "
         "instead of 800 (the best of 12 validation checkpoints on subjects id11 and id12), Adam with a 100-step "
         "warm-up to lr 3e-3 then cosine decay, float32 (bfloat16 autocast on CPUs with AMX-BF16); the two rows of "
         "the paper's 0.8x claim, 3 seeds. A supplement to the 800-step table (results/hgr1), beyond its budget.",
)
HGR1_TABLE2 = Table(
    rows=tuple(
        _row(n, c, v, p, HGR1_FRACTIONS, a)
        for n, c, v, p, a in [  # Table 2 (NME, % of wrist width) and Table S3 (gesture accuracy, %)
            ("Seq-MT (L)", "hgr1.yaml", "L", [52.6, 44.7, 32.1, 22.1, 18.8], []),
            ("Seq-MT (L+A)", "hgr1.yaml", "L+A", [50.0, 40.2, 31.4, 22.3, 18.4], [69.08, 70.14, 72.26, 77.07, 75.92]),
            ("Seq-MT (L+ELT)", "hgr1.yaml", "L+ELT", [45.4, 32.1, 25.8, 19.6, None], []),
            ("Seq-MT (L+ELT+A)", "hgr1.yaml", "L+ELT+A", [40.6, 32.0, 24.0, 19.8, None], [74.64, 75.01, 73.90, 79.10]),
            ("Comm-MT (L)", "hgr1_commmt.yaml", "L", [77.1, 62.8, 52.7, 41.8, 35.7], []),
            ("Comm-MT (L+A)", "hgr1_commmt.yaml", "L+A", [53.4, 39.3, 35.5, 26.9, 24.1],
             [60.86, 69.64, 69.20, 76.03, 73.42]),
            ("Heatmap-MT (L)", "hgr1_heatmapmt.yaml", "L", [66.5, 51.9, 42.4, 30.9, 25.5], []),
            ("Heatmap-MT (L+A)", "hgr1_heatmapmt.yaml", "L+A", [64.8, 54.9, 43.2, 30.5, 26.7],
             [83.74, 87.86, 87.55, 90.29, 89.27]),
        ]
    ),
    fractions=HGR1_FRACTIONS,
    metric="nme",
    unit="% of palm width",
    title="HGR1 hands, Table 2: test NME (% of palm width, MediaPipe Hands' points) vs percentage of labelled images",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),
    quick=REAL_DATA_QUICK,
    accuracy="gesture",
    compare=("Seq-MT (L)", "Seq-MT (L+ELT+A)", 5.0),
    reference="MediaPipe Hands' points (machine-made, not human annotation)",
    protocols={"cpu": HGR1_CPU, "cpu-long": HGR1_CPU_LONG, "paper": PAPER},
    claims=(Claim("Seq-MT (L+A)", "Seq-MT (L)", (5.0,)), Claim("Seq-MT (L+ELT+A)", "Seq-MT (L)", (5.0,), 0.8)),
    note="The landmarks are **MediaPipe Hands' output (machine-made, not human annotation)**: the figures measure "
         "agreement with MediaPipe Hands on 21 points, normalised by the palm width (points 5-17). The paper's "
         "figures (in brackets) are on HGR1's 25 human-annotated points normalised by the wrist width, and the "
         "paper had 898 photos where this copy has 703: compare orderings and ratios, not values. The palm width "
         "shrinks when a hand is seen edge-on (11 of the 577 training and validation hands have one under a tenth "
         "of their landmark box's diagonal, against a median of 0.31), so a few such hands weigh heavily in a mean "
         "NME.",
)
MTFL_FRACTIONS = (1.0, 5.0, 10.0, 20.0, 100.0)
# The face tables' CPU recipe: 900 steps of Adam (100 warm-up steps to lr 3e-3, cosine), the best of 6 validation
# checkpoints. Sized for both tables within 8 hours of a 2-core AVX2 EPYC in float32, from step times measured beside
# other runs (CPU-s per step, log.csv of the 900-step validation runs: MTFL Seq-MT L 0.41, L+ELT+A 0.86 with 16 other
# faces; 300-W Seq-MT L 0.60, L+ELT 1.70, RCN+ L 0.21, L+ELT 0.61 with 8): the 78 cells come to ~53 CPU-seconds per
# step of all, ~13 CPU-hours (6.6 hours of the machine) at 900 steps. The 2,000 steps of 16 + 32 faces first planned
# were estimated at ~60 CPU-hours there. The FFT's batch chunks (fftconv.CHUNK_BYTES, after these figures) have since
# cut 300-W Seq-MT's 68-map steps to ~0.7x their time on an idle machine.
CPU_TRAIN = {"steps": 900, "lr": 0.003, "warmup_steps": 100, "precision": "auto", "batch_labelled": 16,
             "batch_unlabelled": 16, "eval_every": 150, "log_every": 50, "checkpoint_every": 150}
# RCN+ as the bundled face68-fast (configs/300w_fast.yaml): 64x64 input, a stride-2 first conv, 48 maps, 3 poolings
RCN_FAST = {"model": {"input_size": [64, 64], "width": 48, "levels": 3, "stem_stride": 2, "head_kernel": 1}}
# Seq-MT of about RCN_FAST's cost per step on this CPU: five full-resolution 9x9x16 convs at 64x64 (Table S9: 7x32).
# On MTFL's validation faces at 5 % labels, seed 0 (validation NME %, by step): with 900 steps of 16 + 16 faces,
# Seq-MT (L) 14.7 / 13.6 / 11.9 / 11.9 / 9.91 / 9.85 at steps 150-900, (L+ELT+A) 17.4 / 14.0 / 11.2 / 9.98 / 9.42 /
# 8.88 (behind at first, ahead from step 450, 0.90x at the end); 2,000 steps of 16 + 32 faces (the first plan): L
# 6.96, L+ELT+A 6.17 (0.89x); width 8, 1,000 steps: L 11.2, L+ELT+A 10.0; width 16, 500 steps: L 10.6.
SEQMT_CPU = {"model": {"width": 16, "depth": 5}}
MTFL_CPU = Protocol(
    overrides={"train": CPU_TRAIN},
    by_config={"mtfl.yaml": SEQMT_CPU, "mtfl_rcn.yaml": RCN_FAST},
    seeds={1.0: 3, 5.0: 3, 20.0: 1, 100.0: 1},
    fractions=(1.0, 5.0, 20.0, 100.0),
    note="CPU protocol: Seq-MT with five 9x9x16 convs at 64x64 (Table S9: seven 9x9x32) and RCN+ as the bundled "
         "face68-fast (64x64, stride-2 first conv, 48 maps, 3 poolings), 900 steps of 16 labelled + 16 other "
         "faces for every row (the best of 6 validation checkpoints), Adam with a 100-step warm-up to lr 3e-3 then "
         "cosine decay, bfloat16 autocast on CPUs with AMX-BF16 (float32 elsewhere); 3 seeds at 1 and 5 %, 1 at 20 "
         "and 100 %. Sized for a 2-core CPU: on MTFL's validation faces 2,000 steps of 16 + 32 faces reached 6.96 % "
         "(L) and 6.17 % (L+ELT+A) NME at 5 % labels, 900 steps 9.85 and 8.88 % (seed 0).",
)
MTFL_TABLE = Table(
    rows=(
        Row("Seq-MT (L)", "mtfl.yaml", "L"),
        Row("Seq-MT (L+A)", "mtfl.yaml", "L+A"),
        Row("Seq-MT (L+ELT)", "mtfl.yaml", "L+ELT"),
        Row("Seq-MT (L+ELT+A)", "mtfl.yaml", "L+ELT+A"),
        Row("RCN+ (L)", "mtfl_rcn.yaml", "L"),
        Row("RCN+ (L+ELT+A)", "mtfl_rcn.yaml", "L+ELT+A"),
    ),
    fractions=MTFL_FRACTIONS,
    metric="nme",
    unit="% of eye-centre distance",
    title="MTFL: test NME (% of the eye-centre distance, AFLW test list) vs percentage of labelled images",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),  # Seq-MT's ELT is on unlabelled images only
    quick=REAL_DATA_QUICK,
    also=(("auc@0.10", "AUC@0.10", False), ("failure_rate@0.10", "failure rate@0.10 (share of faces over 10 %)", True),
          *((f"attribute_accuracy.{head}", f"{head} accuracy (%)", False)
            for head in ("gender", "smile", "glasses", "pose"))),
    compare=("Seq-MT (L)", "Seq-MT (L+ELT+A)", 5.0),
    protocols={"cpu": MTFL_CPU, "paper": PAPER},
    claims=(Claim("Seq-MT (L+ELT+A)", "Seq-MT (L)", (5.0,), 0.85), Claim("Seq-MT (L+ELT+A)", "Seq-MT (L)", (1.0,)),
            Claim("RCN+ (L+ELT+A)", "RCN+ (L)", (1.0, 5.0))),
    note="Trained on MTFL's training list (LFW + web faces, a tenth held out for validation), tested on its AFLW "
         "list; the four attribute heads (gender, smile, glasses, 5 poses) read the 5 predicted landmarks. With 5 "
         "points the inter-ocular distance is the eye-centre distance (MTFL's and TCDCN's convention), so one NME "
         "serves both; AUC and failure rate at 10 % of it (the threshold TCDCN reports) are tabulated below. The "
         "paper reports no MTFL table (its AFLW results use 19 points), so there is no paper column. Read the "
         "attribute accuracies against always answering the training faces' most common class, which scores 39.20 % "
         "on gender (62 % of the training faces are male, 39 % of AFLW's), 54.83 % on smile, 91.95 % on glasses and "
         "61.00 % on pose (frontal) on the AFLW list.",
)
W300_FRACTIONS = (5.0, 10.0, 20.0, 50.0, 100.0)
# Seq-MT's map layer for 68 points, chosen on validation (5 %, L, 2,000 steps, one seed each, validation NME): a 1x1
# layer from the 16 channels 20.3 %, a 1x1 layer of 64 before it 17.2 %, the paper's 9x9 map layer 13.7 % (the
# best 13.6 % at step 1,500), width 24 with the 9x9 map layer 11.9 % at 1.4x the time per step; RCN+ (L) 8.2 %.
# The 9x9 map layer at width 16 keeps one Seq-MT for both face tables (MTFL's) within the 8-hour budget. With the
# CPU recipe (900 steps, 16 labelled + 8 other faces, ELT on all; 5 %, seed 0, best validation NME): Seq-MT (L) 14.95,
# (L+ELT) 13.88 % (0.93x); RCN+ (L) 9.34, (L+ELT) 8.16 % (0.87x).
W300_CPU = Protocol(  # ELT warps every face here (both passes of 16 + 8), so fewer other faces per step than MTFL
    overrides={"train": {**CPU_TRAIN, "batch_unlabelled": 8}},
    by_config={"300w.yaml": {"model": {**SEQMT_CPU["model"], "beta": 1.0}},
               "300w_rcn.yaml": RCN_FAST},
    seeds=2,
    fractions=(5.0, 10.0, 20.0, 100.0),
    note="CPU protocol: Seq-MT with five 9x9x16 convs and a 9x9 map layer at 64x64 (Table S9: seven 9x9x32 "
         "and a 9x9 map layer), beta 1 (with BatchNorm the paper's 0.01 leaves the softmax flat), and RCN+ as "
         "the bundled face68-fast (64x64, stride-2 first conv, 48 maps, 3 poolings); 900 steps of 16 labelled "
         "+ 8 other faces for every row, ELT on all of them (the best of 6 validation checkpoints), Adam with a "
         "100-step warm-up to lr 3e-3 then cosine decay, bfloat16 autocast on CPUs with AMX-BF16 (float32 "
         "elsewhere); 2 seeds per cell. Sized for a 2-core CPU: Seq-MT (L) at 5 % reached 14.95 % validation NME "
         "after 900 steps, 13.7 % after 2,000.",
)
W300_TABLE = Table(
    rows=(
        Row("Seq-MT (L)", "300w.yaml", "L"),
        Row("Seq-MT (L+ELT)", "300w.yaml", "L+ELT"),
        Row("RCN+ (L)", "300w_rcn.yaml", "L"),
        Row("RCN+ (L+ELT)", "300w_rcn.yaml", "L+ELT"),
    ),
    fractions=W300_FRACTIONS,
    metric="nme",
    unit="% of inter-ocular distance",
    title="300-W partial (AFW + HELEN train, HELEN test): test NME vs percentage of labelled images",
    quick=REAL_DATA_QUICK,
    also=(("nme_by.interpupil", "NME (% of inter-pupil distance)", True), ("auc@0.08", "AUC@0.08", False),
          ("failure_rate@0.08", "failure rate@0.08", True)),
    protocols={"cpu": W300_CPU, "paper": PAPER},
    claims=(Claim("Seq-MT (L+ELT)", "Seq-MT (L)", (5.0, 10.0, 20.0)),
            Claim("RCN+ (L+ELT)", "RCN+ (L)", (5.0, 10.0, 20.0))),
    note="Inter-ocular = outer eye corners (points 37 and 46); inter-pupil = the eye contours' centres. ELT on every "
         "image (the paper's 300-W protocol), so (L+ELT) has a 100 % column. The paper's Table 6 is on the full "
         "300-W test set (HELEN + LFPW + IBUG, eye-centre normalised; Fullset at 5/10/20/50/100 %: Seq-MT (L) "
         "9.82/8.30/7.26/6.28/5.95, Seq-MT (L+ELT) 8.23/7.28/6.62/6.10/5.74, RCN+ (L) 7.26/6.48/5.91/5.52/5.26, "
         "RCN+ (L+ELT) 7.22/6.32/5.88/5.45/5.10); this copy has HELEN's test images only, an easier set.",
)
TABLES: dict[str, Table] = {"blocks-table1": BLOCKS_TABLE1, "hgr1": HGR1_TABLE2, "mtfl": MTFL_TABLE,
                            "300w-partial": W300_TABLE}
FIGURES = ("shapes-figure3",)  # single-run reproductions


def cells(table: Table, seeds: Protocol | int, fractions=None, models=None) -> list[tuple[Row, float, int]]:
    """The grid: every (row, fraction, seed), less the rows' missing 100 % cells; optionally only the
    given ``fractions`` and ``models`` (row names). ``seeds``: a count for every column, or a protocol's."""
    def count(pct: float) -> int:
        return seeds if isinstance(seeds, int) else seeds.seeds_at(pct)

    return [(row, pct, seed) for row in table.rows for pct in table.fractions
            if not (pct == 100.0 and row.name in table.no_full)
            and (fractions is None or pct in fractions) and (models is None or row.name in models)
            for seed in range(count(pct))]


def slug(name: str) -> str:
    return name.replace(" (", "_").replace(")", "").replace("+", "-")


def cell_dir(out: Path, row: Row, pct: float, seed: int) -> Path:
    return out / "runs" / slug(row.name) / f"{pct:g}pct-seed{seed}"
