"""The report as data: a list of blocks that the Markdown and HTML writers both render.

Building the content once and rendering it twice keeps the two outputs in step. Every piece
of text in a block is untrusted (captions, paths and names come from input files) and is
escaped by the writers, except :class:`Verbatim` strings the report builds itself from numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Verbatim(str):
    """Text made by the report itself (formatted numbers): Markdown writes it unescaped so that
    ``0.81 [0.79, 0.83]`` stays readable in the raw file. HTML still escapes it."""


@dataclass
class Asset:
    """A PNG the report embeds (HTML: data URI) or writes to ``report_assets/<slug>.png`` (Markdown)."""

    slug: str
    png: bytes
    alt: str
    width: int
    height: int


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str | None = None


@dataclass
class Paragraph:
    text: str
    muted: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str | None = None
    bold_rows: set[int] = field(default_factory=set)  # row indices to emphasise (headline metric)
    numeric: bool = True  # right-align every column but the first


@dataclass
class PlotGrid:
    plots: list[Asset]


@dataclass
class RetrievedItem:
    image: Asset | None
    text: str | None
    score: float


@dataclass
class ExampleCard:
    image: Asset | None
    image_note: str | None  # why there is no thumbnail (missing or undecodable file)
    fields: list[tuple[str, str]]  # (label, text): text, prediction, reference
    correct: bool | None
    retrieved: list[RetrievedItem] = field(default_factory=list)


@dataclass
class ExampleGrid:
    title: str
    cards: list[ExampleCard]


Block = Heading | Paragraph | Table | PlotGrid | ExampleGrid


@dataclass
class Document:
    title: str
    blocks: list[Block]

    def images(self) -> list[Asset]:
        """Every distinct image (by slug), in order: the assets the Markdown file references."""
        seen: dict[str, Asset] = {}
        for block in self.blocks:
            if isinstance(block, PlotGrid):
                candidates = list(block.plots)
            elif isinstance(block, ExampleGrid):
                candidates = []
                for card in block.cards:
                    candidates.append(card.image)
                    candidates.extend(item.image for item in card.retrieved)
            else:
                continue
            for image in candidates:
                if image is not None:
                    seen.setdefault(image.slug, image)
        return list(seen.values())
