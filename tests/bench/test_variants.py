"""The catalogue of variants and targets."""

from __future__ import annotations

import pytest

from bench.floors import FLOORS
from bench.variants import BY_NAME, TARGETS, VARIANTS, select


class TestSelect:
    """``select`` picks the variants of a run."""

    def test_bare_always_comes_first(self) -> None:
        """Ratios need bare in every round, so it is added first even when not asked for."""
        assert [v.name for v in select(["peer-otel", "bare", "peer-otel"])] == ["bare", "peer-otel"]

    def test_nothing_chosen_means_everything(self) -> None:
        """No subset runs every variant."""
        assert select(None) == list(VARIANTS)

    def test_unknown_names_are_refused(self) -> None:
        """A misspelt name fails with the list of known names."""
        with pytest.raises(ValueError, match="unknown variants"):
            select(["opskit-everything"])


class TestCatalogue:
    """Variants and targets are consistent with each other."""

    def test_targets_name_existing_variants(self) -> None:
        """Each target names an opskit variant and peers that exist, with the same kind of evidence."""
        for target in TARGETS:
            opskit = BY_NAME[target.variant]
            assert opskit.family == "opskit"
            for peer in target.peers:
                assert BY_NAME[peer].family == "peer"
                assert BY_NAME[peer].evidence == opskit.evidence
            if target.floor:
                assert BY_NAME[target.floor].family == "reference"
                assert BY_NAME[target.floor].evidence == opskit.evidence

    def test_every_floor_feature_has_its_middleware(self) -> None:
        """A reference variant is built from the floor middlewares its features name."""
        for variant in VARIANTS:
            if variant.family == "reference":
                assert variant.features and variant.features <= set(FLOORS), variant.name
