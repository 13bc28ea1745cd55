// Decoding a photo (PNG or JPEG) to 8-bit RGB and resizing it for the model the way opticam-rt's
// Python `load_image` does (Pillow's BILINEAR resize, which widens its filter when shrinking).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace opticam {

struct Rgb8 {
    int width = 0;
    int height = 0;
    std::vector<std::uint8_t> pixels;  // interleaved RGB, row-major, height * width * 3
};

// PNG or JPEG file -> RGB. Alpha is composited over white, grayscale replicated, a JPEG's EXIF
// orientation applied. Throws std::runtime_error naming the file.
Rgb8 read_rgb(const std::string& path);

// Pillow's Image.resize(..., BILINEAR) on an RGB image, bit for bit: a separable triangle filter
// whose support grows with the shrink factor, fixed-point coefficients, rounding to 8 bits
// after the horizontal pass and after the vertical one.
Rgb8 resize_bilinear(const Rgb8& image, int width, int height);

// RGB -> planar float (3, H, W) in [0, 1] (value / 255, as the Python to_model_input).
std::vector<float> to_planar(const Rgb8& image);

}  // namespace opticam
