"""Paper-ready reports: n in every caption, no bold the test cannot decide, valid LaTeX (its rule
sequence; compiled where pdflatex is installed), vector figures beside print-resolution PNGs,
readable confusion grids."""

import re
import shutil
import struct
import subprocess

import pytest
from test_analysis import _row, _write_job, make_multirun

from multirun_analysis import analyze
from multirun_analysis.figures import DPI
from multirun_analysis.tables import MIN_N

RULES = re.compile(r"^\\(toprule|midrule|bottomrule|cmidrule|cline|hline)\b")


def _pairwise(root, seeds, racc):
    """One pairwise job per seed: IMP modules of the three losses, |R| = 1, weight and logit
    merges, R-Acc ``racc[loss] + 0.01 * seed``."""
    for seed in range(seeds):
        _write_job(root, seed, [
            _row(task="pairwise", seed=seed, cardinality=1, pair=0, loss=loss, merge=merge,
                 rewarded_acc=value + 0.01 * seed, nonrewarded_entropy=2.0 + 0.01 * seed)
            for loss, value in racc.items() for merge in ("weight", "logit")])
    return root


RACC = {"cross_entropy": 0.583, "quasi_maxent": 0.9, "maxent": 0.983}


@pytest.mark.parametrize("seeds", [2, 4])
def test_n_in_every_caption_and_no_bold_below_three(tmp_path, seeds):
    root = _pairwise(tmp_path / "sweep", seeds, RACC)
    out = tmp_path / "r"
    report = analyze([root], out, ["table2", "table4", "cifar10"])
    tables = [p for p in report.written if p.suffix in (".md", ".tex") and p.stem != "index"]
    assert len(tables) == 10
    for path in tables:
        text = path.read_text()
        caption = text.splitlines()[0 if path.suffix == ".md" else 2]
        assert f"n = {seeds} per cell" in caption, (path.name, caption)
        bold = "**" in text.split("\n", 1)[1] if path.suffix == ".md" else r"\textbf" in text
        assert bold == (seeds >= MIN_N), path.name  # ME clearly best once the test can decide
        assert (f"no bold where n < {MIN_N}" in caption) == (seeds < MIN_N), caption
    md = (out / "table2.md").read_text()
    me = f"{RACC['maxent'] + 0.005 * (seeds - 1):.3f}"
    assert (f"**{me}**" in md) == (seeds >= MIN_N)
    assert "**0.58" not in md  # cross-entropy is never bold beside MaxEnt


def test_latex_rule_sequence_and_compiles(tmp_path):
    root, _ = make_multirun(tmp_path / "multirun" / "s")
    out = tmp_path / "r"
    report = analyze([root], out, ["table1", "table2", "table4", "cifar100"])
    texs = [p for p in report.written if p.suffix == ".tex"]
    assert len(texs) >= 6
    for path in texs:
        rules = [m.group(1) for line in path.read_text().splitlines()
                 for m in [RULES.match(line.strip())] if m]
        # booktabs: top, mid, group rules between rows, bottom; never two in a row
        assert rules[:2] == ["toprule", "midrule"] and rules[-1] == "bottomrule", path.name
        assert set(rules[2:-1]) <= {"cmidrule"}, (path.name, rules)
        lines = [x.strip() for x in path.read_text().splitlines()]
        for a, b in zip(lines, lines[1:], strict=False):
            assert not (RULES.match(a) and RULES.match(b)), (path.name, a, b)
        assert all(line.count("\\cmidrule") <= 1 for line in lines)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: the rule sequence is checked, not compiled")
    have_multirow = subprocess.run(["kpsewhich", "multirow.sty"], capture_output=True,
                                   text=True).stdout.strip()
    # without the multirow package: a stand-in with its signature (\multirow[t]{n}{*}{text})
    multirow = (r"\usepackage{multirow}" if have_multirow
                else r"\NewDocumentCommand\multirow{o m m m}{#4}")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n" + multirow + "\n"
                   "\\begin{document}\n" + "".join(f"\\input{{{p}}}\n" for p in texs)
                   + "\\end{document}\n")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def _png_size_dpi(path):
    """(width, height) in pixels and dots per inch of a PNG (its IHDR and pHYs chunks)."""
    raw = path.read_bytes()
    width, height = struct.unpack(">II", raw[16:24])
    at = raw.index(b"pHYs")
    x, _, unit = struct.unpack(">IIB", raw[at + 4:at + 13])
    assert unit == 1  # per metre
    return width, height, round(x * 0.0254)


def test_vector_figures_beside_print_pngs(tmp_path):
    root, _ = make_multirun(tmp_path / "multirun" / "s")
    _write_job(root, 99, [_row(task="pairwise", imp=False, seed=s, cardinality=1, pair=0,
                               merge=m, rewarded_acc=0.8, nonrewarded_entropy=2.0)
                          for s in range(3) for m in ("weight", "logit")])
    report = analyze([root], tmp_path / "r", ["fig3", "fig4", "fig5", "confusion"])
    pngs = [p for p in report.written if p.suffix == ".png"]
    pdfs = {p for p in report.written if p.suffix == ".pdf"}
    assert pngs and pdfs == {p.with_suffix(".pdf") for p in pngs}
    for pdf in pdfs:
        assert pdf.read_bytes()[:5] == b"%PDF-"
    for png in pngs:
        assert _png_size_dpi(png)[2] == DPI
    width, height, _ = _png_size_dpi(tmp_path / "r" / "confusion_maxent_weight.png")
    assert width >= 3 * 528 and height >= 3 * 275  # was 528 x 275 px


def test_confusion_titles_readable_class_sets(tmp_path, monkeypatch):
    from multirun_analysis import figures

    titles = []

    def keep(fig, path):
        titles.extend((ax.get_title(), ax.title.get_fontsize()) for ax in fig.axes
                      if ax.get_title())
        return save(fig, path)

    save = figures._save
    monkeypatch.setattr(figures, "_save", keep)
    monkeypatch.setattr(figures, "POOL_FIGURES", 10**6)  # drawn here, where keep sees them
    root, _ = make_multirun(tmp_path / "multirun" / "s")
    analyze([root], tmp_path / "r", ["confusion"])
    assert titles and all(size >= 9 for _, size in titles)
    assert any(t.startswith("|R|=2, R={0,1} (n=3)") for t, _ in titles), titles  # stored as 0-1
    assert not any("R=0-1" in t for t, _ in titles)
