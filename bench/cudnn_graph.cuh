// What the cuDNN convolution benchmarks share (fp8_conv.cu, conv_engines.cu): the UNet's 3x3 shapes, and
// the graph API's plumbing from the engine (backends/cuda/cudnn_graph.h).
#pragma once
#include <cstdint>

#include "backends/cuda/cudnn_graph.h"

using namespace sdrt::cuda::dnn;

// The stride-1 3x3 convolutions of the SD 1.5 UNet at 512x512 (NHWC): input and output channels, latent
// side, and how many of each a forward has.
struct UnetConv3x3 {
  int64_t C, K, HW;
  int count;
};
inline constexpr UnetConv3x3 kUnetConv3x3[] = {
    {320, 320, 64, 7},   {640, 320, 64, 2},   {960, 320, 64, 1},    {640, 640, 64, 1},   {320, 640, 32, 1},  {640, 640, 32, 6},
    {960, 640, 32, 1},   {1280, 640, 32, 1},  {1920, 640, 32, 1},   {1280, 1280, 32, 1}, {640, 1280, 16, 1}, {1280, 1280, 16, 7},
    {1920, 1280, 16, 1}, {2560, 1280, 16, 2}, {1280, 1280, 8, 11}, {2560, 1280, 8, 3}};
