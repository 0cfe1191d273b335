"""Every tunable default in one place. Environment variables override config fields one to one
(``configs/env_overrides.py``), never these constants directly."""

from __future__ import annotations

import os

ENV_PREFIX = "MODELHOST_"

# Path of the YAML read by ``serve run vllm_host:build_app`` (the reference's variable, no prefix).
MODEL_CONFIG_PATH = os.environ.get("MODEL_CONFIG_PATH", "model_config.yaml")

# Seconds a request may take end to end before the router answers 504 (reference's name).
DEFAULT_LLM_ROUTER_HTTP_TIMEOUT = 300.0

# Seconds the router waits for a deployment's ``get_config`` before reporting it ``loading``.
DISCOVERY_TIMEOUT_S = 2.0

# Largest request body the router accepts, in bytes (413 above it).
MAX_REQUEST_BODY_BYTES = 32 * 1024 * 1024

# The port the API is served on (the router's own listener) and the paths that need no API key.
API_PORT = 8000
OPEN_PATHS = ("/v1/health", "/health", "/ping")

# Default sampling parameters, from the reference's parameter table.
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7

# Env var with comma-separated API keys; when set, every path but router_config.open_paths needs one.
API_KEYS_ENV = "MODELHOST_API_KEYS"

# The ingress deployment's name; ``in_router`` models live in its replicas.
ROUTER_DEPLOYMENT_NAME = "MultiModelRouter"

# A model deployment's max_ongoing_requests when its deployment_config sets none (Ray's default is 5).
MODEL_MAX_ONGOING_REQUESTS = 64

# Streams cross the router -> model deployment hop in batches of chunks, at least this many
# seconds apart (the first chunk goes at once): one Ray message per token costs CPU the model needs.
# Twice Ray Serve LLM's 50 ms: on 2 cores one stream of a GGUF model made 1.8% more tokens/s at 0.1 s than
# at 0.05 s (48 alternated pairs against llama-server), and ten events a second still read as smooth text.
STREAM_INTERVAL_S = 0.1
# ...and longer as more streams run on a replica: together they aim at this many messages a second, each
# waiting at most STREAM_INTERVAL_MAX_S (serve/deployments/stream_pacing.py).
STREAM_EVENTS_PER_S = 40.0
STREAM_INTERVAL_MAX_S = 0.2

# Router replica resources: it only forwards requests, so it asks for a sliver of a CPU.
ROUTER_NUM_CPUS = 0.1
FRONT_DOOR_NUM_CPUS = 0.05
FRONT_DOOR_RETRY_TIMEOUT_S = 30.0
FRONT_DOOR_DEPLOYMENT_NAME = "FrontDoor"
FRONT_DOOR_ROUTER_HOST = "127.0.0.1"  # behind the front door, the router replicas listen on loopback only
ROUTER_MAX_ONGOING_REQUESTS = 1024

# Media engines (AUDIO, VISION, VIDEO): largest decoded input per request (413 above it), and
# how many frames a VIDEO request may sample at most.
MEDIA_MAX_INPUT_BYTES = 25 * 1024 * 1024
VIDEO_MAX_FRAMES = 64

# Longest audio (seconds) and largest image (pixels) a media model accepts by default (400 above).
MEDIA_MAX_AUDIO_SECONDS = 3600.0
MEDIA_MAX_IMAGE_PIXELS = 40_000_000

# Per-node cache for s3:// and gs:// model sources (copied once, then reused); read at call time.
MODEL_CACHE_ENV = ENV_PREFIX + "MODEL_CACHE"
DEFAULT_MODEL_CACHE = "~/.cache/modelhost/models"

# Speech synthesis (TTS): the longest input text, in characters (OpenAI's limit), and the sample rate
# of `pcm` answers (OpenAI's: raw 16-bit mono at 24 kHz, so clients written for it play ours).
SPEECH_MAX_INPUT_CHARS = 4096
SPEECH_PCM_SAMPLE_RATE = 24_000
