# twinnet: `docker build -t twinnet .` then
#   docker run --rm -v /path/to/mnist:/data/mnist:ro twinnet
# MNIST (the four IDX files) is mounted, never baked in; the default command is README's main job.
FROM python:3.11-slim
WORKDIR /twinnet
COPY . .
RUN pip install --no-cache-dir -e ".[dev]"
ENV MNIST_DIR=/data/mnist
CMD ["python", "compare.py"]
