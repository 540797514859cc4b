"""Text for image-text models: tokenizers (host-side, numpy) and prompt templates.

  tokenizers.make(cfg) -> Tokenizer     'bytes' | 'sentencepiece' | 'clip_bpe';
                                         tok(texts) -> int32 [N, context_length]
  templates.templates(name)             prompt templates ('imagenet', 'cifar10', ...)
  templates.class_names(name)           class names as CLIP's prompts spell them

No jax is imported here.
"""
