"""Tiny random-weight models of every encoder family, saved the way real ones are, and a tiny dataset.

Each builder writes a folder (or file) that the registry's own loader reads through --weights, so the
test exercises the same code path as the hub models, without any download.
"""
import json

import numpy as np
import torch
from PIL import Image

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>", "a", "dog", "cat", "runs", "on", "the", "grass",
         "red", "blue", "car", "man", "woman", "sits", "in", "park", "."]


def tiny_dataset(root, n=6, captions_per_image=(2, 3), sizes=((40, 30), (30, 44))):
    """n random-colour JPEGs and a COCO captions json; ids deliberately not in file order."""
    rng = np.random.default_rng(0)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    images, anns = [], []
    ids = [7, 3, 11, 5, 2, 9, 4, 8, 6, 10, 12, 13][:n]
    for k, img_id in enumerate(ids):
        w, h = sizes[k % len(sizes)]
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        name = f"img_{img_id:03d}.jpg"
        Image.fromarray(arr).save(img_dir / name)
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
        for _ in range(captions_per_image[k % len(captions_per_image)]):
            words = rng.choice(WORDS[6:], size=5)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "caption": " ".join(words)})
    cap = root / "captions.json"
    cap.write_text(json.dumps({"images": images, "annotations": anns}))
    return img_dir, cap


def _tokenizer(path, bos="<s>", eos="</s>"):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}",
                                                       special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token=bos, eos_token=eos)
    fast.save_pretrained(path)


def _save(build, processor, path, seed=0):
    """Build the model with the global generator seeded first (weights are drawn at construction, so
    every build gives the same weights), then save it and its processor."""
    torch.manual_seed(seed)
    model = build()
    model.save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    return path


def dinov2(path, seed=0):
    import transformers as T
    cfg = T.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         image_size=32, patch_size=8)
    proc = T.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    return _save(lambda: T.Dinov2Model(cfg), proc, path, seed)


def convnext(path):
    import transformers as T
    cfg = T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    proc = T.ConvNextImageProcessor(size={"shortest_edge": 32})
    return _save(lambda: T.ConvNextForImageClassification(cfg), proc, path)


def resnet(path):
    import transformers as T
    cfg = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    proc = T.ConvNextImageProcessor(size={"shortest_edge": 32})
    return _save(lambda: T.ResNetForImageClassification(cfg), proc, path)


def segformer(path, segment=False):
    import transformers as T
    cfg = T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                            num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                            decoder_hidden_size=16, num_labels=3)
    model = T.SegformerForSemanticSegmentation if segment else T.SegformerModel
    return _save(lambda: model(cfg), T.SegformerImageProcessor(size={"height": 32, "width": 32}), path)


def dpt(path):
    import transformers as T
    cfg = T.DPTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      image_size=32, patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[8, 16],
                      reassemble_factors=[2, 1], fusion_hidden_size=16)
    proc = T.DPTImageProcessor(size={"height": 32, "width": 32})
    return _save(lambda: T.DPTModel(cfg, add_pooling_layer=False), proc, path)


def sam(path):
    import transformers as T
    vision = T.SamVisionConfig(hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                               image_size=64, patch_size=16, window_size=2, global_attn_indexes=[1], mlp_dim=32,
                               initializer_range=0.02)
    prompt = T.SamPromptEncoderConfig(hidden_size=8, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = T.SamMaskDecoderConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16,
                                     iou_head_hidden_dim=8)
    cfg = T.SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                      mask_decoder_config=decoder.to_dict())
    proc = T.SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    return _save(lambda: T.SamModel(cfg), proc, path)


def detr(path):
    import transformers as T
    backbone = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                              out_features=["stage1", "stage2"])
    cfg = T.DetrConfig(backbone_config=backbone.to_dict(), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                       decoder_ffn_dim=32, num_queries=5)
    proc = T.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 48})
    return _save(lambda: T.DetrModel(cfg), proc, path)


def clip(path):
    import transformers as T
    text = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, eos_token_id=2, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    cfg = T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
    proc = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    _save(lambda: T.CLIPModel(cfg), proc, path)
    _tokenizer(path)
    return path


def bert_text(path):
    """A tiny BERT with a tokenizer: for hf:<repo> text models."""
    import transformers as T
    cfg = T.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=32)
    _save(lambda: T.BertModel(cfg), None, path)
    _tokenizer(path, bos="[CLS]", eos="[SEP]")
    return path


def sentence_transformer(path):
    from sentence_transformers import SentenceTransformer, models
    bert = bert_text(path.parent / (path.name + "_bert"))
    word = models.Transformer(str(bert))
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(path))
    return path


def timm_checkpoint(path, name="test_vit"):
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    torch.save(model.state_dict(), path)
    return path


OPENCLIP_ARCH = "vlsim-tiny-clip"


def openclip_checkpoint(path, seed=0):
    """A 2-layer ViT / 2-layer text transformer open_clip architecture (16-d embeddings, 32 x 32 images,
    1.6 M weights), registered with open_clip.add_model_config as OPENCLIP_ARCH (its config json beside the
    checkpoint), random weights after torch.manual_seed(seed), saved as a plain state dict at path."""
    import open_clip
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    config = path.parent / f"{OPENCLIP_ARCH}.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(OPENCLIP_ARCH)
    torch.save(model.state_dict(), path)
    return path
