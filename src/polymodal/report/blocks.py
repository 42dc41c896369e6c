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
class Sound:
    """A clip an example refers to: its spectrogram always, the clip itself (FLAC) when it fits the report's
    budget (HTML: an ``<audio>`` player over a data URI; Markdown: ``report_assets/<slug>.flac``)."""

    slug: str
    name: str  # the file name, for labels
    path: str  # the source file, shown when the clip is not embedded
    seconds: float
    spectrogram: Asset
    clip: bytes | None
    note: str | None = None  # why the clip is not embedded


@dataclass
class FrameStrip:
    """A clip an example refers to, as a row of small frames sampled uniformly over it, each with its time; no
    frames, and a note saying why, once the report's budget for strips is spent."""

    slug: str
    name: str  # the file name, for labels
    path: str  # the source file, shown when the frames are not
    seconds: float  # the clip's length
    frames: list[Asset]
    times: list[float]  # each frame's time in seconds from the clip's start
    note: str | None = None  # why the frames are not shown


@dataclass
class RetrievedItem:
    image: Asset | None
    text: str | None
    score: float
    sound: Sound | None = None
    note: str | None = None  # why an image, sound or clip could not be shown (names the file)
    strip: FrameStrip | None = None


@dataclass
class ExampleCard:
    image: Asset | None
    image_note: str | None  # why there is no thumbnail (missing or undecodable file)
    fields: list[tuple[str, str]]  # (label, text): text, prediction, reference
    correct: bool | None
    retrieved: list[RetrievedItem] = field(default_factory=list)
    sound: Sound | None = None
    sound_note: str | None = None  # why there is no spectrogram (missing or undecodable file, named)
    strip: FrameStrip | None = None
    strip_note: str | None = None  # why there is no frame strip (missing or undecodable clip, named)


@dataclass
class ExampleGrid:
    title: str
    cards: list[ExampleCard]


Block = Heading | Paragraph | Table | PlotGrid | ExampleGrid


@dataclass
class Document:
    title: str
    blocks: list[Block]

    def sounds(self) -> list[Sound]:
        """Every distinct sound (by slug), in order, preferring a use that embeds its clip."""
        seen: dict[str, Sound] = {}
        for block in self.blocks:
            if isinstance(block, ExampleGrid):
                for card in block.cards:
                    for sound in [card.sound, *(item.sound for item in card.retrieved)]:
                        if sound is not None and (sound.slug not in seen or seen[sound.slug].clip is None):
                            seen[sound.slug] = sound
        return list(seen.values())

    def clips(self) -> list[Sound]:
        """The sounds whose clip the report embeds (Markdown: writes beside itself)."""
        return [sound for sound in self.sounds() if sound.clip is not None]

    def images(self) -> list[Asset]:
        """Every distinct image (by slug), in order: the assets the Markdown file references (spectrograms and the
        frames of strips too)."""
        seen: dict[str, Asset] = {}
        for block in self.blocks:
            if isinstance(block, PlotGrid):
                candidates = list(block.plots)
            elif isinstance(block, ExampleGrid):
                candidates = []
                for card in block.cards:
                    candidates.append(card.image)
                    candidates.extend(item.image for item in card.retrieved)
                    for strip in [card.strip, *(item.strip for item in card.retrieved)]:
                        candidates.extend(strip.frames if strip is not None else [])
            else:
                continue
            for image in candidates:
                if image is not None:
                    seen.setdefault(image.slug, image)
        for sound in self.sounds():
            seen.setdefault(sound.slug, sound.spectrogram)
        return list(seen.values())
