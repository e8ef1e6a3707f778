"""``fedmoe report RUN`` (fedmoe.federated.html_report): one self-contained page of a finished run and of a run
still going, everything taken from the files escaped, one-line errors for what is not a run."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html import escape
from html.parser import HTMLParser

import pytest

from fedmoe.cli import main
from fedmoe.federated.html_report import ReportError, load_run, render
from tests.federated.conftest import read_csv

INJECTED = "<script>alert('x')</script>"


class Page(HTMLParser):
    """The elements of a page: tags in order with their attributes, the rows of each table by its id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: dict[str, int] = {}
        self._table: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.rows[self._table] = 0
        elif tag == "tr" and self._table is not None:
            self.rows[self._table] += 1

    def handle_endtag(self, tag) -> None:
        if tag == "table":
            self._table = None

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def images(page: Page) -> list[bytes]:
    """The decoded PNG bytes of every image (each must be an inline PNG)."""
    out = []
    for attrs in page.named("img"):
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def assert_self_contained(text: str) -> None:
    page = Page(text)
    assert not page.named("script") and not page.named("link") and not page.named("iframe")
    for tag, attrs in page.tags:  # nothing to fetch: every address an element holds is inline data
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            assert attrs.get(name) is None or attrs[name].startswith("data:"), (tag, name, attrs[name][:60])
    assert not re.search(r"(?i)https?:|url\(|@import", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text))
    from PIL import Image

    for png in images(page):
        with Image.open(io.BytesIO(png)) as im:
            im.verify()


def test_the_page_of_a_finished_run(watched_run, tmp_path):
    out, run, _ = watched_run
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text()
    assert_self_contained(text)
    page = Page(text)
    assert page.rows["rounds"] == 1 + len(read_csv(out / "rounds.csv"))  # header + one per round
    assert page.rows["devices"] == 1 + 4
    assert page.rows["expert-usage"] == 1 + len(run.metrics["rounds"][-1]["gate_usage_by_class"])
    assert len(images(page)) == 5  # accuracy, costs, devices per round, per device, expert usage
    assert "finished" in text and "2 of 2" in text
    for name in run.metrics["experts"]:
        assert f"<th>{name}</th>" in text
    config = json.loads((out / "config.json").read_text())
    assert escape(f'"aggregator": {json.dumps(config["federated"]["aggregator"])}') in text  # the configuration


def test_the_page_of_a_run_still_going(watched_run):
    _, _, seen = watched_run
    text = seen[2][2]  # made while round 2 trained
    assert_self_contained(text)
    page = Page(text)
    assert page.rows["rounds"] == 1 + 2 and page.rows["devices"] == 1 + 4
    assert "in progress" in text and "1 of 2" in text and "expert-usage" not in text
    assert "No round is complete yet" in seen[1][2]


def test_a_line_being_written_is_left_out_but_a_broken_row_is_an_error(watched_run, tmp_path):
    out = watched_run[0]
    for name in ("config.json", "rounds.csv", "devices.csv"):
        shutil.copy(out / name, tmp_path / name)
    whole = (tmp_path / "rounds.csv").read_text()
    (tmp_path / "rounds.csv").write_text(whole + "3,2,4")  # half of round 3's line
    assert len(load_run(tmp_path).rounds) == 3
    lines = whole.splitlines(keepends=True)
    (tmp_path / "rounds.csv").write_text(lines[0] + "1,2\n" + "".join(lines[1:]))
    with pytest.raises(ReportError, match=r"rounds.csv: row 2 has 2 cells"):
        load_run(tmp_path)


def test_everything_from_the_files_is_escaped(watched_run, tmp_path):
    out = watched_run[0]
    config = json.loads((out / "config.json").read_text())
    config["name"] = INJECTED
    (tmp_path / "config.json").write_text(json.dumps(config))
    rounds = (out / "rounds.csv").read_text()
    (tmp_path / "rounds.csv").write_text(rounds.replace("gate_entropy", "<b>gate_entropy</b>", 1))
    devices = (out / "devices.csv").read_text().replace("weak", "<img src=x onerror=alert(1)>")
    (tmp_path / "devices.csv").write_text(devices)
    text = render(load_run(tmp_path))
    assert INJECTED not in text and "<img src=x" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text  # the title, the summary and the config
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "<th>&lt;b&gt;gate_entropy&lt;/b&gt;</th>" in text
    assert_self_contained(text)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such run folder"),
    ("empty", "not a fedmoe run folder (none of config.json, rounds.csv, metrics.json in it)"),
    ("bad json", "config.json: not a JSON document"),
])
def test_what_is_not_a_run_is_one_line(tmp_path, capsys, case, message):
    folder = tmp_path / "run"
    if case != "missing":
        folder.mkdir()
    if case == "bad json":
        (folder / "config.json").write_text("{")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (folder / "report.html").exists()
