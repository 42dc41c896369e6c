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


def test_a_name_that_is_not_a_string_is_refused_and_listing_still_works() -> None:
    reg: Registry = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(TypeError, match=r"widget name must be a string, got 42 \(int\); .*register\(\"my_widget\"\)"):
        reg.register(42)(lambda: 2)  # type: ignore[call-overload]
    assert reg.names() == ["a"]  # what every 'unknown X; known: ...' error lists


def test_a_builder_that_cannot_be_called_is_refused() -> None:
    reg: Registry = Registry("widget")
    with pytest.raises(TypeError, match=r"widget 'five': the builder must be a class or function, got 5 \(int\)"):
        reg.register("five")(5)  # type: ignore[arg-type]
    assert "five" not in reg


def test_register_without_parentheses_registers_under_the_class_name() -> None:
    reg: Registry = Registry("widget")

    @reg.register
    class SmallWidget:
        pass

    assert isinstance(SmallWidget, type) and reg.get("SmallWidget") is SmallWidget


def test_names_a_recipe_cannot_hold_are_refused_and_the_packaged_shape_is_accepted() -> None:
    reg: Registry = Registry("widget")
    for name in ["my enc/v1", "a.b", "x:y", "-x", "_x", "tab\tname", "caf\u00e9"]:
        with pytest.raises(ValueError, match="cannot be written in a recipe: use letters, digits, '_' and '-'"):
            reg.register(name)(lambda: 1)
    with pytest.raises(ValueError, match=r"\(e\.g\. 'my_enc_v1'\)"):
        reg.register("my enc/v1")(lambda: 1)
    assert len(reg) == 0
    accepted = ["hf_text", "co_attention", "shapes-clip", "efficientnet_lite0", "Depth2", "3d"]
    for name in accepted:
        reg.register(name)(lambda: 1)
    assert reg.names() == sorted(accepted)


def test_an_empty_name_or_a_nameless_builder_is_refused() -> None:
    reg: Registry = Registry("widget")
    with pytest.raises(ValueError, match=r"widget name is empty; pass one: register\(\"my_widget\"\)"):
        reg.register("")(lambda: 1)
    with pytest.raises(ValueError, match=r"'<lambda>' cannot be written .*pass a name"):
        reg.register(lambda: 1)
    assert len(reg) == 0
