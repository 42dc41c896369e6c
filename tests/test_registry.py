import pytest

from polymodal.registry import Registry


def test_register_build_describe() -> None:
    reg: Registry = Registry("widget")

    @reg.register("small")
    def small(width: int = 8, depth: int = 2) -> tuple[int, int]:
        """A small widget.

        More text."""
        return width, depth

    assert reg.build("small", width=3) == (3, 2)
    assert "small" in reg and reg.names() == ["small"] and len(reg) == 1
    (row,) = reg.describe()
    assert row["summary"] == "A small widget."
    assert [p["name"] for p in row["params"]] == ["width", "depth"]
    assert row["params"][0]["default"] == 8 and row["params"][0]["type"] == "int"


def test_unknown_and_duplicate_names() -> None:
    reg: Registry = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(KeyError, match="unknown widget 'b'; known: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: 2)
