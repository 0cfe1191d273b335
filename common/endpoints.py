"""HTTP paths of the API, named once."""

INFER = "/v1/infer"
CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TEXT_GENERATION = (CHAT_COMPLETIONS, COMPLETIONS)
