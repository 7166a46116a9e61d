"""The exact book: levels by text, exact ordering, aliases, invalid values, trimming."""

from __future__ import annotations

from decimal import Decimal

from shared.book import Book, Side, differences


def test_levels_keep_the_exact_text_and_order_numerically() -> None:
    side = Side(bid=True)
    assert side.apply([["9.5", "1.0"], ["10.25", "2.000"], ["100", "3"]]) is None
    assert side.top(3) == [("100", "3"), ("10.25", "2.000"), ("9.5", "1.0")]
    asks = Side(bid=False)
    asks.apply([["10.25", "2"], ["9.5", "1"], ["100", "3"]])
    assert asks.best() == ("9.5", "1")


def test_zero_quantity_deletes_and_a_second_spelling_is_the_same_level() -> None:
    side = Side(bid=False)
    side.apply([["7.61", "5"]])
    side.apply([["7.6100", "6"]])  # the same price written another way
    assert side.top(5) == [("7.61", "6")]
    side.apply([["7.610", "0.000"]])
    assert len(side) == 0 and side.best() is None


def test_long_prices_beyond_float_precision_stay_distinct() -> None:
    side = Side(bid=False)
    a, b = "0.1000000000000000001", "0.1000000000000000002"
    side.apply([[b, "1"], [a, "1"]])
    assert [p for p, _ in side.top(2)] == [a, b]


def test_invalid_levels_are_returned_and_not_applied() -> None:
    side = Side(bid=True)
    bad = side.apply(
        [["1", "-1"], ["-5", "1"], ["0", "1"], ["2", "NaN"], ["abc", "1"], ["3", "1e999"], ["4", "1"]]
    )
    assert bad == [["1", "-1"], ["-5", "1"], ["0", "1"], ["2", "NaN"], ["abc", "1"], ["3", "1e999"]]
    assert side.top(10) == [("4", "1")]


def test_wrong_shapes_do_not_raise() -> None:
    side = Side(bid=True)
    bad = side.apply([["1", "1"], ["2"], "x", None, [["nested"], "1"], ["3", "2"]])
    assert bad is not None and len(bad) == 4
    assert side.top(5) == [("3", "2"), ("1", "1")]
    assert side.apply("not a list") is not None


def test_json_numbers_are_levels_too() -> None:
    side = Side(bid=False)
    side.apply([[31600.5, 1.25], [31600, 2]])
    assert side.top(2) == [(31600, 2), (31600.5, 1.25)]


def test_top_skips_stale_heap_entries_after_churn() -> None:
    side = Side(bid=True)
    for i in range(1, 3000):
        side.apply([[str(i), "1"]])
        if i % 3:
            side.apply([[str(i), "0"]])
    top = side.top(5)
    assert [p for p, _ in top] == ["2997", "2994", "2991", "2988", "2985"]
    assert side.best_key() == 2997


def test_trim_keeps_the_best_levels() -> None:
    side = Side(bid=False)
    side.apply([[str(p), "1"] for p in range(10, 0, -1)])
    side.trim(3)
    assert side.top(10) == [("1", "1"), ("2", "1"), ("3", "1")]


def test_crossed_and_snapshot_differences() -> None:
    book = Book()
    book.reset([["10", "1"], ["9", "1"]], [["11", "1"], ["12", "1"]])
    assert not book.crossed()
    book.bids.apply([["11", "1"]])
    assert book.crossed()
    book.bids.apply([["11", "0"]])
    # The snapshot covers 9..12; a level beyond its depth is not compared.
    book.asks.apply([["50", "1"]])
    assert differences(book, [["10", "1.0"], ["9", "1"]], [["11", "1"], ["12", "1"]]) == []
    diffs = differences(book, [["10", "2"], ["9", "1"]], [["11", "1"], ["12", "1"]])
    assert diffs == [{"side": "bid", "price": "10", "snapshot": "2", "book": "1"}]


def test_decimal_and_float_keys_compare_exactly() -> None:
    side = Side(bid=True)
    side.apply([[Decimal("1.5"), "1"], ["1.25", "1"]])
    assert side.best() == (Decimal("1.5"), "1")


def test_review_cases_for_exactness() -> None:
    # Many significant digits: never rounded, never merged with a shorter price.
    bids = Side(bid=True)
    long_price = "100.1234567890123456789012345678"
    assert bids.apply([[long_price, "1"], ["100.1234567890123456789012345679", "2"]]) is None
    assert bids.best() == ("100.1234567890123456789012345679", "2")
    asks = Side(bid=False)
    asks.apply([["7.61", "1"], ["7.6100000000000000000000000000001", "2"]])
    assert [p for p, _ in asks.top(5)] == ["7.61", "7.6100000000000000000000000000001"]
    # A float key is never compared with a Decimal one.
    bids = Side(bid=True)
    bids.apply([["0.1", "1"], ["0.1000000000000000001", "1"]])
    assert bids.best() == ("0.1000000000000000001", "1")
    # Exponents: huge is invalid, tiny positive is a quantity, not a delete.
    side = Side(bid=False)
    side.apply([["5", "1"]])
    bad = side.apply([["6", "1.00000000000000e9999999"], ["7", "1e999999"], ["1.000000000000000e400", "1"]])
    assert bad is not None and len(bad) == 3
    assert side.apply([["5", "1.000000000000000e-400"]]) is None
    assert side.top(5) == [("5", "1.000000000000000e-400")]


def test_booleans_are_never_numbers_whatever_was_seen_before() -> None:
    side = Side(bid=False)
    side.apply([[1.0, 1.0], [2.5, 1.0]])  # JSON numbers (FTX)
    assert side.apply([["99", True], ["98", False]]) == [["99", True], ["98", False]]
    other = Side(bid=False)
    assert other.apply([["99", True]]) == [["99", True]]


def test_crossing_is_exact_between_a_float_side_and_a_decimal_side() -> None:
    book = Book()
    book.reset([["0.1000000000000000001", "1"]], [["0.1", "1"]])
    assert book.crossed()
    book.reset([["0.0999999999999999999", "1"]], [["0.1", "1"]])
    assert not book.crossed()


def test_differences_tolerate_malformed_snapshots() -> None:
    book = Book()
    book.reset([["10", "1"]], [["11", "1"]])
    assert differences(book, [5, None, ["x"], ["10", "1"]], None) == []
    assert differences(book, "nope", [["11", "2"]]) == [
        {"side": "ask", "price": "11", "snapshot": "2", "book": "1"}
    ]
