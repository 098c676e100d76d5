"""Model loading: Stable Diffusion components, tokenizers, classifiers."""
