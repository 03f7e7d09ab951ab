"""AVLlmSFTTrainer: TRL's SFTTrainer with the settings an audio-visual collator needs and per-modality losses."""

import torch
from peft import PeftModel
from torch.distributed.fsdp import FSDPModule
from trl import SFTConfig, SFTTrainer

from ..models.avllm import ROW_TYPES, AVLlmProcessor, row_type_indices
from .collator import AVLlmDataCollator


class AVLlmSFTTrainer(SFTTrainer):
    """`SFTTrainer` for AVLlm models.

    Sets what the multimodal collator needs (`skip_prepare_dataset`, `remove_unused_columns=False`, truncation to
    `args.max_length` in the collator instead of the dataset preparation), builds an `AVLlmDataCollator` when none is
    given, turns on the zero-weighted pass through absent branches (`AVLlmModel.touch_absent_modalities`, a switch of
    this run, not saved with the model) when training runs on several processes (so ranks whose batch lacks a
    modality do not hang), and logs the loss per modality (`loss_visual`, `loss_audio`,
    `loss_audio_visual`, `loss_text`) beside the total.
    """

    def __init__(
        self,
        model,
        args: SFTConfig,
        processing_class: AVLlmProcessor,
        data_collator=None,
        touch_absent_modalities: bool = True,
        **kwargs,
    ):
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        args.remove_unused_columns = False
        if data_collator is None:
            data_collator = AVLlmDataCollator(processing_class, max_length=args.max_length)
        args.max_length = None
        if touch_absent_modalities and args.world_size > 1:
            (model.get_base_model() if isinstance(model, PeftModel) else model).model.touch_absent_modalities = True
        super().__init__(
            model=model, args=args, processing_class=processing_class, data_collator=data_collator, **kwargs
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # SFTTrainer calls the model once with its fused LM head, whose per-token log-probabilities are all that the
        # per-modality losses need: capture that output instead of paying for another forward.
        captured = []
        handle = model.register_forward_hook(lambda _module, _args, output: captured.append(output))
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        fused = next((output for output in captured if getattr(output, "label_mask", None) is not None), None)
        if fused is not None and "mm_token_type_ids" in inputs:
            self._log_modality_losses(inputs["mm_token_type_ids"], fused)
        return result

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # FSDP2 swaps the model's class for a generated `FSDP<Class>` subclass defined in torch; `save_pretrained`
        # would write that class into the config's `auto_map` and copy torch's FSDP sources as the remote code instead
        # of ours. Save under the model's own class (FSDP2 adds no state to the instance, only methods).
        sharded_class = type(self.model)
        if isinstance(self.model, FSDPModule):
            self.model.__class__ = next(base for base in sharded_class.__bases__ if base is not FSDPModule)
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.model.__class__ = sharded_class

    @torch.no_grad()
    def _log_modality_losses(self, mm_token_type_ids: torch.Tensor, outputs) -> None:
        """Token-averaged loss of the rows of each modality, summed over all ranks."""
        token_losses = -(outputs.log_probs.detach().float() * outputs.label_mask).sum(dim=1)
        token_counts = outputs.label_mask.sum(dim=1).float()
        row_types = row_type_indices(mm_token_type_ids).to(token_losses.device)
        sums = torch.zeros(len(ROW_TYPES), device=token_losses.device).index_add_(0, row_types, token_losses)
        counts = torch.zeros(len(ROW_TYPES), device=token_losses.device).index_add_(0, row_types, token_counts)
        sums, counts = self.accelerator.reduce(torch.stack([sums, counts]), reduction="sum")
        mode = "train" if self.model.training else "eval"
        for index, name in enumerate(ROW_TYPES):
            if counts[index] > 0:
                self._metrics[mode][f"loss_{name}"].append((sums[index] / counts[index]).item())
