import torch

from lors_distill.core.data import Normalizer
from lors_distill.core.evaluate import RetrievalSplit, SmallSet, evaluate_small_set
from lors_distill.core.models import ModelRecipe
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.similarity import IdentitySimilarity
from tests.core.test_experts import scene_split
from tests.params import section

RECIPE = ModelRecipe.convnet(16, 48, width=16, depth=2)
CONFIG = section(
    "evaluation",
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
    split = RetrievalSplit(train.images, texts, own)
    cpu = torch.device("cpu")
    after, first = evaluate_small_set(RECIPE.build, small, split, normalizer, CONFIG, [1, 2], cpu)
    assert len(after) == 2
    assert min(r["mean_recall"] for r in after) > max(before) + 20.0
    assert recall(first) == after[0]  # the first seed's model is returned as it ended
    again, _ = evaluate_small_set(RECIPE.build, small, split, normalizer, CONFIG, [1], cpu)
    assert again[0] == after[0]  # same seed, same model, same numbers


def test_validation_chosen_epoch_is_that_epoch_of_training():
    """The val-selected scores are exactly those of the same seed trained for the chosen number
    of epochs (same schedule), the epoch is the validation argmax over the checked epochs, and
    selecting leaves the last-epoch numbers untouched."""
    train, val = scene_split(64, 0), scene_split(48, 1)
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    order, offsets, _ = train.captions_by_image()
    small = SmallSet(
        normalizer(train.images),
        train.text[order[offsets]],
        IdentitySimilarity(64),
        torch.tensor([0.05, 0.05]),
    )
    test = RetrievalSplit(train.images, train.text, train.caption_image)
    val_split = RetrievalSplit(val.images, val.text, val.caption_image)
    cpu = torch.device("cpu")
    config = CONFIG.updated(epochs=12, lr_decay_epoch=8)
    plain, _ = evaluate_small_set(RECIPE.build, small, test, normalizer, config, [3], cpu)
    runs, _ = evaluate_small_set(
        RECIPE.build, small, test, normalizer, config, [3], cpu, val=val_split, select_every=3
    )
    chosen = runs[0]["val_selected"]
    assert {k: v for k, v in runs[0].items() if k != "val_selected"} == plain[0]
    assert chosen["epoch"] in (3, 6, 9)  # (6 here) an earlier epoch's copy is what is scored
    val_recalls = {}
    for epochs in (3, 6, 9, 12):
        short = config.updated(epochs=epochs)
        on_val, _ = evaluate_small_set(RECIPE.build, small, val_split, normalizer, short, [3], cpu)
        val_recalls[epochs] = on_val[0]["mean_recall"]
        if epochs == chosen["epoch"]:
            on_test, _ = evaluate_small_set(RECIPE.build, small, test, normalizer, short, [3], cpu)
            assert {k: chosen[k] for k in on_test[0]} == on_test[0]
    best = max(val_recalls.values())
    assert chosen["val_mean_recall"] == best
    assert chosen["val_curve"] == {str(e): r for e, r in val_recalls.items()}
    assert chosen["epoch"] == min(e for e, r in val_recalls.items() if r == best)
