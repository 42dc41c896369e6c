"""The report's size bound for embedded media: bytes of one kind (sound clips, frame strips) counted per use, since
HTML repeats a file at every place it is shown."""

from __future__ import annotations


def kib(n: int) -> str:
    """Bytes as ``12 KB`` or ``4 MB`` for notes."""
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.0f} MB"


class Budget:
    """``total`` bytes to hand out; :meth:`take` says whether ``size`` more still fit (and counts them if so)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.spent = 0

    def take(self, size: int) -> bool:
        if self.spent + size > self.total:
            return False
        self.spent += size
        return True

    def spent_note(self, what: str, kind: str) -> str:
        """Why ``what`` is not embedded: the report's bytes for ``kind`` are spent."""
        return f"{what} not embedded: the report's {kib(self.total)} for {kind} is spent"
