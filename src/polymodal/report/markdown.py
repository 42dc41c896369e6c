"""Render a :class:`Document` as Markdown that references PNGs (plots, thumbnails, spectrograms, video frames) and
FLAC clips in ``report_assets/``.

Input text is escaped so that a caption cannot break a table (``|``), inject HTML
(``<script>``) or forge a link (``[x](...)``) in a Markdown viewer.
"""

from __future__ import annotations

import re
from pathlib import Path

from polymodal.report.blocks import (
    Asset,
    Document,
    ExampleGrid,
    FrameStrip,
    Heading,
    Paragraph,
    PlotGrid,
    Sound,
    Table,
    Verbatim,
)

ASSETS_DIR = "report_assets"

# The characters that can start markup in CommonMark/GFM within a line: emphasis, code, links
# and images (``[`` / ``]``; ``(`` only matters after ``]``), raw HTML and entities, table
# cells, strikethrough and heading closers. A backslash before them is always allowed.
_SPECIAL = re.compile(r"([\\`*\[\]<>|&#~])")
# ``_`` only emphasises at a word boundary, so ``cross_attention`` stays readable unescaped.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(text: str) -> str:
    """Escape untrusted text for one line of Markdown (also inside a table cell)."""
    if isinstance(text, Verbatim):
        return str(text)
    one_line = " ".join(str(text).split())
    return _UNDERSCORE.sub(r"\\_", _SPECIAL.sub(r"\\\1", one_line))


def asset_path(asset: Asset) -> str:
    return f"{ASSETS_DIR}/{asset.slug}.png"


def clip_path(sound: Sound) -> str:
    return f"{ASSETS_DIR}/{sound.slug}.flac"


def _image(asset: Asset) -> str:
    return f"![{md_escape(asset.alt)}]({asset_path(asset)})"


def _sound(sound: Sound, written: set[str]) -> str:
    """The spectrogram and a link to the clip's copy in ``report_assets/``, or the source path and why there is
    no copy (``written``: slugs whose clip is written)."""
    if sound.slug in written:
        return f"{_image(sound.spectrogram)} [▶ {md_escape(sound.name)}]({clip_path(sound)}) {sound.seconds:.1f} s"
    return f"{_image(sound.spectrogram)} {md_escape(sound.path)} ({md_escape(sound.note or '')})"


def _strip(strip: FrameStrip) -> str:
    """The frames, each followed by its time, and the clip's name and length; or its path and why no frames."""
    if not strip.frames:
        return f"{md_escape(strip.path)} ({md_escape(strip.note or '')})"
    frames = " ".join(f"{_image(frame)} {time:.2f} s" for frame, time in zip(strip.frames, strip.times))
    return f"{frames} · {md_escape(strip.name)} {strip.seconds:.1f} s"


def _table(table: Table) -> list[str]:
    def row(cells: list[str], bold: bool) -> str:
        texts = [md_escape(c) for c in cells]
        if bold:
            texts = [f"**{t}**" if t else t for t in texts]
        return "| " + " | ".join(texts) + " |"

    align = ["---"] + [("---:" if table.numeric else "---") for _ in table.columns[1:]]
    lines = [row(table.columns, False), "| " + " | ".join(align) + " |"]
    lines += [row(cells, i in table.bold_rows) for i, cells in enumerate(table.rows)]
    if table.caption:
        lines += ["", f"*{md_escape(table.caption)}*"]
    return lines


def _mark(correct: bool | None) -> str:
    return {True: "✓ correct", False: "✗ wrong", None: ""}[correct]


def _examples(grid: ExampleGrid, written: set[str]) -> list[str]:
    lines = [f"### {md_escape(grid.title)}", ""]
    # Only the columns some card fills: a zero-shot example has no text, a caption no result.
    labels = [
        label for label in ("text", "prediction", "reference") if any(label in dict(c.fields) for c in grid.cards)
    ]
    has_image = any(c.image is not None or c.image_note for c in grid.cards)
    has_sound = any(c.sound is not None or c.sound_note for c in grid.cards)
    has_video = any(c.strip is not None or c.strip_note for c in grid.cards)
    has_result = any(c.correct is not None for c in grid.cards)
    has_retrieved = any(c.retrieved for c in grid.cards)
    header = (
        (["image"] if has_image else [])
        + (["sound"] if has_sound else [])
        + (["video"] if has_video else [])
        + labels
        + (["result"] if has_result else [])
        + (["retrieved (score)"] if has_retrieved else [])
    )
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    for card in grid.cards:
        fields = dict(card.fields)
        cells = []
        if has_image:
            cells.append(_image(card.image) if card.image else md_escape(card.image_note or ""))
        if has_sound:
            cells.append(_sound(card.sound, written) if card.sound else md_escape(card.sound_note or ""))
        if has_video:
            cells.append(_strip(card.strip) if card.strip else md_escape(card.strip_note or ""))
        cells += [md_escape(fields.get(label, "")) for label in labels]
        if has_result:
            cells.append(_mark(card.correct))
        if has_retrieved:
            items = []
            for item in card.retrieved:
                if item.sound is not None:
                    shown = _sound(item.sound, written)
                elif item.strip is not None:
                    shown = _strip(item.strip)
                elif item.image is not None:
                    shown = _image(item.image)
                else:
                    shown = md_escape(item.text or item.note or "")
                items.append(f"{item.score:.3f} {shown}")
            cells.append(" · ".join(items))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(document: Document) -> str:
    """The Markdown text; :func:`write_assets` writes the files it references."""
    written = {sound.slug for sound in document.clips()}
    lines = [f"# {md_escape(document.title)}", ""]
    for block in document.blocks:
        if isinstance(block, Heading):
            lines.append(f"{'#' * block.level} {md_escape(block.text)}")
        elif isinstance(block, Paragraph):
            text = md_escape(block.text)
            lines.append(f"*{text}*" if block.muted else text)
        elif isinstance(block, Table):
            lines.extend(_table(block))
        elif isinstance(block, PlotGrid):
            lines.extend(_image(plot) for plot in block.plots)
        elif isinstance(block, ExampleGrid):
            lines.extend(_examples(block, written))
        lines.append("")
    return "\n".join(lines)


def write_assets(document: Document, out_dir: Path) -> int:
    """Write every image of ``document`` and every clip it embeds into ``out_dir/report_assets``; returns how many
    PNGs."""
    images = document.images()
    clips = document.clips()
    folder = out_dir / ASSETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    keep = {f"{asset.slug}.png" for asset in images} | {f"{sound.slug}.flac" for sound in clips}
    # A re-run must not leave the previous report's files behind; only our own names are removed.
    for pattern in ("plot-*.png", "img-*.png", "snd-*.png", "snd-*.flac", "vid-*.png"):
        for stale in folder.glob(pattern):
            if stale.name not in keep:
                stale.unlink()
    for asset in images:
        (folder / f"{asset.slug}.png").write_bytes(asset.png)
    for sound in clips:
        (folder / f"{sound.slug}.flac").write_bytes(sound.clip or b"")
    return len(images)
