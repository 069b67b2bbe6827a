"""The dense packed-attention path gadx used before THD packing, kept only as the tests' reference:
a [B,1,T,T] block-diagonal causal mask (True = blocked) through megatron's decoder."""
from __future__ import annotations

import torch


def dense_mask(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """megatron mask (True = blocked) [B,1,T,T]: causal within equal doc ids."""
    T = doc_ids_BT.shape[1]
    causal_TT = torch.ones(T, T, dtype=torch.bool, device=doc_ids_BT.device).tril()
    same_BTT = doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :]
    return ~(same_BTT & causal_TT)[:, None]


def dense_hidden(model, input_ids_BT, position_ids_BT, doc_ids_BT) -> torch.Tensor:
    """GadxModel.hidden as it was: RoPE angles to the decoder, the documents as a dense mask."""
    gpt = model.gpt
    emb_TBH = gpt.embedding(input_ids=input_ids_BT, position_ids=None) if gpt.pre_process else None
    out_TBH = gpt.decoder(hidden_states=emb_TBH, attention_mask=dense_mask(doc_ids_BT),
                          rotary_pos_emb=model._rope(position_ids_BT))
    return out_TBH.transpose(0, 1) if model.dims.is_last_stage else out_TBH
