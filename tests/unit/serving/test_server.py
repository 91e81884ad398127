"""Which registered model a scoring server is asked to serve, and the rollout's patch."""

from __future__ import annotations

import pytest

from mlrig.errors import ConfigError
from mlrig.serving.rollout import VERSION_ANNOTATION, RolloutPlan
from mlrig.serving.server import ServedModel, champion_uri, parse_model_uri


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/mlrig-iris@champion", ("mlrig-iris", "champion", None)),
        ("models:/mlrig-iris/3", ("mlrig-iris", None, "3")),
        (champion_uri("a.b_c-d"), ("a.b_c-d", "champion", None)),
    ],
)
def test_a_registered_model_is_named_by_alias_or_version(uri: str, parsed: tuple) -> None:
    assert parse_model_uri(uri) == parsed


@pytest.mark.parametrize(
    "uri", ["runs:/abc/model", "models:/", "models:/name", "models:/name/latest", "s3://b/k"]
)
def test_anything_else_is_refused_with_the_forms_it_takes(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"models:/<name>@<alias>"):
        parse_model_uri(uri)


def test_a_version_is_downloaded_by_its_own_uri_whatever_alias_named_it() -> None:
    assert ServedModel("mlrig-iris", "4").uri == "models:/mlrig-iris/4"


def test_the_rollout_patches_only_the_pod_templates_version_annotation() -> None:
    plan = RolloutPlan("mlrig-serving", "ml", "mlrig-iris", serving="3", champion="4")
    assert plan.needed
    assert plan.patch == {
        "spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: "4"}}}}
    }
    args = plan.kubectl_args()
    assert args[:5] == ["--namespace", "ml", "patch", "deployment", "mlrig-serving"]
    assert not RolloutPlan("d", "ml", "m", serving="4", champion="4").needed
