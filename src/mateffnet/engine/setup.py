"""From a configuration to the objects a run needs: the model and the datasets."""

from __future__ import annotations

from mateffnet.config import ExperimentConfig
from mateffnet.models import StreamNet


def build_model(config: ExperimentConfig, class_names: list[str], pretrained: bool = True) -> StreamNet:
    m = config.model
    return StreamNet(
        len(class_names), modality=m.modality, backbone=m.backbone, num_segments=m.num_segments,
        flow_length=m.flow_length, attention=m.attention, attention_tokens=m.attention_tokens, heads=m.heads,
        embed_dim=m.embed_dim, attention_residual=m.attention_residual, dropout=m.dropout,
        input_size=m.input_size, stem_init=m.stem_init, class_names=list(class_names),
        pretrained=m.pretrained if pretrained else None,
    )
