"""The ``features`` pipeline."""

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines.features.nodes import encode_captions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=encode_captions,
                inputs=["captions", "params:features"],
                outputs=["train_text_features", "val_text_features", "test_text_features"],
                name="encode_captions_node",
            ),
        ],
        tags="features",
    )
