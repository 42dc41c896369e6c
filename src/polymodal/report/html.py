"""Render a :class:`Document` as one self-contained HTML file.

Self-contained means: inline CSS, every image and sound clip a base64 ``data:`` URI, no scripts, no
request to anything outside the file (it opens the same air-gapped, attached to an email or archived).
Sound clips and frame strips are bounded in size (:mod:`polymodal.report.sounds`, :mod:`polymodal.report.strips`).
All text goes through :func:`html.escape`: captions, names and paths are untrusted input.
"""

from __future__ import annotations

import base64
from html import escape

from polymodal.report.blocks import (
    Asset,
    Document,
    ExampleCard,
    ExampleGrid,
    FrameStrip,
    Heading,
    Paragraph,
    PlotGrid,
    RetrievedItem,
    Sound,
    Table,
)

WIDE_PX = 600  # a plot wider than the 5-inch default (several panels) gets a whole row

CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f9fafb; --ok:#047857; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 32px 28px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 20px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 10px; }
p.muted, .caption { color: var(--muted); font-size: 13px; }
nav { font-size: 13px; margin: 8px 0 0; }
nav a { color: #1d4ed8; text-decoration: none; margin-right: 14px; }
.table-wrap { width: fit-content; min-width: min(520px, 100%); max-width: 100%; margin: 10px 0; overflow-x: auto;
  background: #fff; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; white-space: nowrap; }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bold td { font-weight: 600; }
td.key { color: #374151; white-space: nowrap; }
td { overflow-wrap: anywhere; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); grid-auto-flow: dense;
  gap: 16px; margin: 16px 0; }
figure.wide { grid-column: 1 / -1; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
.card { display: flex; gap: 12px; background: #fff; border: 1px solid var(--line); border-left: 4px solid var(--line);
  border-radius: 8px; padding: 10px; font-size: 13px; }
.card.ok { border-left-color: var(--ok); }
.card.bad { border-left-color: var(--bad); }
.thumb { flex: 0 0 auto; align-self: flex-start; width: 128px; min-height: 64px; display: flex; align-items: center;
  justify-content: center; background: #f3f4f6; border-radius: 4px; color: var(--muted); font-size: 11px;
  text-align: center; }
/* Thumbnails are at most 128 px; smaller sources (64 px benchmark images) are shown at 128 too. */
.thumb img { width: 128px; height: auto; border-radius: 4px; display: block; }
.fields { min-width: 0; }
.fields dt { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
.fields dd { margin: 0 0 6px; overflow-wrap: anywhere; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 8px; border-radius: 999px; }
.badge.ok { background: #d1fae5; color: var(--ok); }
.badge.bad { background: #fee2e2; color: var(--bad); }
.retrieved { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
.retrieved div { width: 72px; font-size: 11px; text-align: center; color: var(--muted); overflow-wrap: anywhere; }
.retrieved img { width: 64px; height: 64px; object-fit: cover; border-radius: 4px; display: block; margin: 0 auto 2px; }
.media { flex: 0 0 auto; display: flex; flex-direction: column; gap: 8px; }
.thumb { overflow-wrap: anywhere; }
.examples.sounds { grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); }
.sound { width: 192px; font-size: 11px; color: var(--muted); overflow-wrap: anywhere; }
.sound img { width: 192px; height: 64px; border-radius: 4px; display: block; image-rendering: pixelated; }
.sound audio { width: 192px; height: 32px; display: block; margin-top: 4px; }
.retrieved div.sound, .retrieved div.note { width: 156px; text-align: left; }
.retrieved .sound img { width: 156px; height: 52px; object-fit: fill; margin: 0 0 2px; }
.retrieved .sound audio { width: 156px; }
.examples.videos { grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.examples.videos .card { flex-wrap: wrap; }  /* on a narrow page the fields go under the strip */
.strip { font-size: 11px; color: var(--muted); overflow-wrap: anywhere; }
.strip .frames { display: flex; gap: 2px; margin-bottom: 2px; }
.strip figure { margin: 0; padding: 0; border: none; background: none; text-align: center; }
.strip img { width: 64px; height: auto; border-radius: 2px; display: block; }
.retrieved div.strip, .retrieved div.strip div { width: auto; text-align: left; }
.retrieved .strip img { width: 48px; height: auto; margin: 0; }
ol.ranked { margin: 4px 0 0; padding-left: 20px; color: var(--fg); }
ol.ranked li { margin-bottom: 2px; }
.score { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 6px; }
"""


def data_uri(asset: Asset) -> str:
    return "data:image/png;base64," + base64.b64encode(asset.png).decode("ascii")


def clip_uri(sound: Sound) -> str:
    return "data:audio/flac;base64," + base64.b64encode(sound.clip or b"").decode("ascii")


def _img(asset: Asset, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} src="{data_uri(asset)}" alt="{escape(asset.alt)}" width="{asset.width}" height="{asset.height}">'


def _table(table: Table) -> str:
    def cell(tag: str, text: str, column: int) -> str:
        classes = "num" if table.numeric and column > 0 else ("key" if column == 0 and tag == "td" else "")
        attr = f' class="{classes}"' if classes else ""
        return f"<{tag}{attr}>{escape(text)}</{tag}>"

    head = "".join(cell("th", c, i) for i, c in enumerate(table.columns))
    rows = []
    for r, cells in enumerate(table.rows):
        attr = ' class="bold"' if r in table.bold_rows else ""
        rows.append(f"<tr{attr}>" + "".join(cell("td", c, i) for i, c in enumerate(cells)) + "</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>{caption}'


def _plots(grid: PlotGrid) -> str:
    figures = "".join(
        f"<figure{' class=wide' if plot.width > WIDE_PX else ''}>{_img(plot)}</figure>" for plot in grid.plots
    )
    return f'<div class="plots">{figures}</div>'


def _sound(sound: Sound, extra: str = "") -> str:
    """The spectrogram, a player when the clip is embedded, and the clip's name and length (or why not embedded)."""
    player = (
        f'<audio controls preload="metadata" src="{clip_uri(sound)}" title="{escape(sound.name)}"></audio>'
        if sound.clip is not None
        else ""
    )
    label = f"{escape(sound.name)} · {sound.seconds:.1f} s"
    if sound.note:
        label += f"<br>{escape(sound.note)}"
    return f'<div class="sound">{_img(sound.spectrogram)}{player}{label}{extra}</div>'


def _strip(strip: FrameStrip, extra: str = "") -> str:
    """The frames in a row, each over its time, then the clip's name and length (or why the frames are not shown)."""
    frames = "".join(
        f"<figure>{_img(frame)}<figcaption>{time:.2f} s</figcaption></figure>"
        for frame, time in zip(strip.frames, strip.times)
    )
    label = f"{escape(strip.name)} · {strip.seconds:.1f} s"
    if strip.note:
        label += f"<br>{escape(strip.note)}"
    return f'<div class="strip"><div class="frames">{frames}</div>{label}{extra}</div>'


def _retrieved(items: list[RetrievedItem]) -> str:
    """Retrieved images, sounds or clips as a row of tiles; retrieved texts (captions) as a ranked list."""
    if any(item.image is not None or item.sound is not None or item.strip is not None or item.note for item in items):
        tiles = []
        for item in items:
            caption = escape(item.text) + "<br>" if item.text else ""
            if item.sound is not None:
                tiles.append(_sound(item.sound, f"<br>{caption}{item.score:.3f}"))
                continue
            if item.strip is not None:
                tiles.append(_strip(item.strip, f"<br>{caption}{item.score:.3f}"))
                continue
            if item.image is None and item.note:  # the file could not be read: say which and why
                tiles.append(f'<div class="note">{escape(item.note)}<br>{caption}{item.score:.3f}</div>')
                continue
            what = _img(item.image) if item.image else ""
            tiles.append(f"<div>{what}{caption}{item.score:.3f}</div>")
        return '<div class="retrieved">' + "".join(tiles) + "</div>"
    rows = "".join(f'<li><span class="score">{item.score:.3f}</span>{escape(item.text or "")}</li>' for item in items)
    return f'<ol class="ranked">{rows}</ol>'


def _card(card: ExampleCard) -> str:
    state = {True: " ok", False: " bad", None: ""}[card.correct]
    thumb = _img(card.image) if card.image else escape(card.image_note or "no image")
    parts = []
    if card.correct is not None:
        parts.append(f'<span class="badge{state}">{"✓ correct" if card.correct else "✗ wrong"}</span>')
    items = "".join(f"<dt>{escape(label)}</dt><dd>{escape(text)}</dd>" for label, text in card.fields)
    parts.append(f"<dl>{items}</dl>")
    if card.retrieved:
        parts.append("<dt>retrieved</dt>" + _retrieved(card.retrieved))
    media = []
    if card.image is not None or card.image_note is not None:
        media.append(f'<div class="thumb">{thumb}</div>')
    if card.sound is not None:
        media.append(_sound(card.sound))
    elif card.sound_note is not None:
        media.append(f'<div class="thumb sound">{escape(card.sound_note)}</div>')
    if card.strip is not None:
        media.append(_strip(card.strip))
    elif card.strip_note is not None:
        media.append(f'<div class="thumb strip">{escape(card.strip_note)}</div>')
    media_html = f'<div class="media">{"".join(media)}</div>' if media else ""
    return f'<div class="card{state}">{media_html}<div class="fields">{"".join(parts)}</div></div>'


def _has_sound(card: ExampleCard) -> bool:
    return card.sound is not None or card.sound_note is not None or any(i.sound is not None for i in card.retrieved)


def _has_strip(card: ExampleCard) -> bool:
    return card.strip is not None or card.strip_note is not None or any(i.strip is not None for i in card.retrieved)


def _examples(grid: ExampleGrid) -> str:
    # Spectrograms, players and frame strips are wider than image thumbnails: fewer, wider cards per row.
    wide = ""
    if any(_has_strip(c) for c in grid.cards):
        wide = " videos"
    elif any(_has_sound(c) for c in grid.cards):
        wide = " sounds"
    cards = "".join(_card(c) for c in grid.cards)
    return f'<h3>{escape(grid.title)}</h3><div class="examples{wide}">{cards}</div>'


def render_html(document: Document) -> str:
    """The complete HTML page as a string."""
    body = []
    anchors = [b for b in document.blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    nav = "".join(f'<a href="#{escape(h.anchor or "")}">{escape(h.text)}</a>' for h in anchors)
    for block in document.blocks:
        if isinstance(block, Heading):
            anchor = f' id="{escape(block.anchor)}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p{' class=muted' if block.muted else ''}>{escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_table(block))
        elif isinstance(block, PlotGrid):
            body.append(_plots(block))
        elif isinstance(block, ExampleGrid):
            body.append(_examples(block))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # The page may not fetch anything: a CSP keeps even a forged tag from reaching out.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'\">"
        f"<title>{escape(document.title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{escape(document.title)}</h1><nav>{nav}</nav>{''.join(body)}</main></body></html>\n"
    )
