"""dream-talk: emotional audio-driven talking faces from one portrait with diffusion (DREAM-Talk, arXiv 2312.13578).

EmoDiff, a transformer diffusion model over windows of ARKit-52 blendshapes + head pose, conditioned on frame-aligned
audio features, the initial state and an emotion-style clip (through a style encoder), with classifier-free guidance
on audio and style; a lip refiner that re-predicts only the 27 jaw/mouth channels; MFCC / log-mel / wav2vec2 audio
front-ends aligned to the video frame rate; JSON and LiveLinkFace CSV motion files; tracking of blendshapes from video;
a portrait-warp renderer and a proxy-avatar preview; dataset preparation, metrics and eSpeak NG demo speech. Public names are imported lazily, so ``dream-talk --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ARKIT_BLENDSHAPES": "dream_talk.motion",
    "AudioFrontEnd": "dream_talk.audio_features",
    "DreamTalkConfig": "dream_talk.config",
    "DreamTalkPipeline": "dream_talk.pipeline_dream_talk",
    "DreamTalkPipelineOutput": "dream_talk.pipeline_dream_talk",
    "EmoDiff": "dream_talk.modeling_dream_talk",
    "EmoDiffTrainingModule": "dream_talk.training",
    "KeypointPreviewRenderer": "dream_talk.render",
    "LipRefiner": "dream_talk.modeling_dream_talk",
    "LipTrainingModule": "dream_talk.training",
    "MOUTH_BLENDSHAPES": "dream_talk.motion",
    "MotionSequence": "dream_talk.motion",
    "POSE_NAMES": "dream_talk.motion",
    "PortraitWarpRenderer": "dream_talk.warp_render",
    "Renderer": "dream_talk.render",
    "StyleEncoder": "dream_talk.modeling_dream_talk",
    "SyncNetScorer": "dream_talk.metrics",
    "evaluate_manifest": "dream_talk.evaluation",
    "generate_files": "dream_talk.inference",
    "lip_loss": "dream_talk.training",
    "load_renderer": "dream_talk.render",
    "load_shipped_config": "dream_talk.config",
    "load_speech": "dream_talk.audio_features",
    "portrait_state": "dream_talk.tracking",
    "prepare_dataset": "dream_talk.prepare",
    "proxy_landmarks": "dream_talk.render",
    "read_motion": "dream_talk.motion",
    "synthesize_speech": "dream_talk.speech",
    "track_video": "dream_talk.tracking",
    "train": "dream_talk.training",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
