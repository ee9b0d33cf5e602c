from conftest import REPO

from ovlift.pipeline.registry import STAGES
from ovlift.pipeline.schema_doc import render_schema_doc


def test_docs_cache_schema_matches_the_specs():
    committed = (REPO / "docs" / "cache_schema.md").read_text()
    assert committed == render_schema_doc(), "docs/cache_schema.md is stale: run `ovlift schema > docs/cache_schema.md`"


def test_every_registered_array_is_documented():
    text = render_schema_doc()
    for impls in STAGES.values():
        for cls in impls.values():
            assert f"## `{cls.spec.stage}`" in text
            for array in cls.spec.arrays:
                assert f"| `{array.name}` | {array.dtype} | {array.shape_text()} |" in text
