"""The bundled demos of ``run.py --demo``: which models and methods, on which data, and the note printed after.

``figure1``: Figure 1 in small (3 image encoders x 2 text encoders); ``depth``: EfficientNet-Lite0 across depth
with the pixels and random-weights controls. Both read the bundled flickr1k embeddings in data/.
"""
# The paper's Figure 1 methods, named: a method added to the registry later (e.g. one that needs no anchors)
# changes neither the demo's table nor its numbers
FIGURE1_METHODS = ["linear", "relative", "linear_local_CKA", "kernel_local_CKA", "qap"]
DEMOS = {
    # Figure 1 in small: 3 image encoders x 2 text encoders, the paper's methods but cos (dimensions differ)
    "figure1": dict(methods=FIGURE1_METHODS, vid_models=["efficientnet_lite0", "efficientnet_lite1",
                                                     "efficientnet_lite2"], text_models=["minilm", "mpnet"],
                    figure="figure1.png"),
    # Figure 1 across depth: EfficientNet-Lite0's blocks, pixels and a random Lite0 against mpnet captions
    "depth": dict(methods=FIGURE1_METHODS, vid_models=[f"efficientnet_lite0@_blocks.{k}" for k in (1, 3, 5, 8, 11, 14)]
                  + ["efficientnet_lite0", "pixels", "random:efficientnet_lite0"], text_models=["mpnet"],
                  figure="figure1_depth.png"),
}
DEMO_DATA = dict(base_data="flickr1k", query_data="flickr1k", base_samples=320, query_samples=500,
                 clustering_mode=0, seeds=(0, 1, 2))
DEMO_NOTE = """\
What these numbers mean: {q} flickr8k captions are matched to their {q} photos (chance: 1/{q} = {chance:.1%})
using {b} known image-caption pairs as anchors, with no training, averaged over seeds 0 1 2. Matching
accuracy: the fraction of captions assigned their own photo; top-1: the fraction whose photo scores best
(qap only matches); alignment: how alike the two spaces are on the same rows (CKA variants, mutual k-NN,
CKNNA). {what}"""
DEMO_WHAT = {
    "figure1": "Captions by all-MiniLM-L6-v2 or all-mpnet-base-v2;\nphotos by small ImageNet classifiers "
               "(EfficientNet-Lite0/1/2), far weaker and more alike than the paper's ~30:\nexpect a narrow "
               "spread and low accuracy.",
    "depth": "Captions by all-mpnet-base-v2; photos by EfficientNet-Lite0 at six depths and its final "
             "layer,\nand two controls that learned nothing: 16 x 16 pixels and a randomly initialised Lite0.",
}



def demo_note(name):
    """What the demo's numbers mean, printed after its table."""
    q = DEMO_DATA["query_samples"]
    return DEMO_NOTE.format(q=q, b=DEMO_DATA["base_samples"], chance=1 / q, what=DEMO_WHAT[name])
