"""The ``features`` pipeline: one node, or ``features.shards`` shard nodes and a merge."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines import GPU
from lors_distill.pipelines.features.nodes import (
    encode_caption_shard,
    encode_captions,
    merge_caption_shards,
)

OUTPUTS = ["train_text_features", "val_text_features", "test_text_features"]


def create_pipeline(shards: int = 1, **kwargs) -> Pipeline:
    """Caption encoding as one node, or (``shards`` > 1) as ``shards`` independent nodes
    (parallel-safe; each on its own GPU under the Dask runner) and a node that merges them
    into the same three bundles, byte for byte."""
    if shards == 1:
        nodes = [
            Node(
                func=encode_captions,
                inputs=["captions", "params:features"],
                outputs=OUTPUTS,
                name="encode_captions_node",
                tags=GPU,
            )
        ]
    else:
        nodes = [
            Node(
                func=update_wrapper(
                    partial(encode_caption_shard, shard=shard, shards=shards),
                    encode_caption_shard,
                ),
                inputs=["captions", "params:features"],
                outputs=f"text_features_shard_{shard}",
                name=f"encode_caption_shard_{shard}_node",
                tags=GPU,
            )
            for shard in range(shards)
        ]
        nodes.append(
            Node(
                func=merge_caption_shards,
                inputs=["captions", "params:features"]
                + [f"text_features_shard_{shard}" for shard in range(shards)],
                outputs=OUTPUTS,
                name="merge_caption_shards_node",
            )
        )
    return Pipeline(nodes, tags="features")
