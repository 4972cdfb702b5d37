"""The ``ingestion`` pipeline."""

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines.ingestion.nodes import ingest_source


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=ingest_source,
                inputs="params:ingestion",
                outputs=[
                    "train_images",
                    "val_images",
                    "test_images",
                    "captions",
                    "ingestion_report",
                ],
                name="ingest_source_node",
            ),
        ],
        tags="ingestion",
    )
