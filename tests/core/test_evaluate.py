import torch

from lors_distill.core.data import Normalizer
from lors_distill.core.evaluate import EvalTrainingConfig, SmallSet, evaluate_small_set
from lors_distill.core.models import ConvNetConfig, ImageEncoderSpec, ModelRecipe
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.similarity import IdentitySimilarity
from tests.core.test_experts import scene_split

RECIPE = ModelRecipe(
    ImageEncoderSpec("convnet", 16, False, ConvNetConfig(width=16, depth=2, norm="instancenorm")),
    48,
    0.1,
    0.07,
)
CONFIG = EvalTrainingConfig(
    epochs=30,
    batch_size=64,
    momentum=0.9,
    weight_decay=5e-4,
    lr_decay_epoch=20,
    lr_decay_factor=0.1,
    loss="wbce",
)


def test_training_on_a_small_set_fits_it():
    """Retrieval among the set's own pairs rises far above the untrained models' (chance)."""
    train = scene_split(96, 0)
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    order, offsets, _ = train.captions_by_image()
    texts = train.text[order[offsets]]
    small = SmallSet(
        normalizer(train.images), texts, IdentitySimilarity(96), torch.tensor([0.05, 0.05])
    )
    own = torch.arange(96)

    def recall(model):
        return evaluate_model(model, train.images, texts, own, normalizer, torch.device("cpu"))

    before = [recall(RECIPE.build(seed))["mean_recall"] for seed in (1, 2)]
    after = evaluate_small_set(
        RECIPE.build,
        small,
        train.images,
        texts,
        own,
        normalizer,
        CONFIG,
        [1, 2],
        torch.device("cpu"),
    )
    assert len(after) == 2
    assert min(r["mean_recall"] for r in after) > max(before) + 20.0
    again = evaluate_small_set(
        RECIPE.build,
        small,
        train.images,
        texts,
        own,
        normalizer,
        CONFIG,
        [1],
        torch.device("cpu"),
    )
    assert again[0] == after[0]  # same seed, same model, same numbers
