#include "image.hpp"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>

#include <jpeglib.h>
#include <png.h>

namespace opticam {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw std::runtime_error(path + ": " + what);
}

// ---- PNG (libpng) -------------------------------------------------------------------------

// Pillow's alpha_composite of a pixel over opaque white, in its 7-bit fixed point.
std::uint8_t over_white(std::uint8_t value, std::uint8_t alpha) {
    const std::uint32_t bits = 7;
    std::uint32_t coef1 = static_cast<std::uint32_t>(alpha) << bits;  // alpha * 255 * 255 * 2^7 / (255 * 255)
    std::uint32_t coef2 = 255u * (1u << bits) - coef1;
    std::uint32_t tmp = value * coef1 + 255u * coef2 + (0x80u << bits);
    return static_cast<std::uint8_t>((((tmp >> 8) + tmp) >> 8) >> bits);
}

// libpng's messages: errors are kept for ours (one line), warnings dropped.
void on_png_error(png_structp png, png_const_charp message) {
    auto* text = static_cast<std::string*>(png_get_error_ptr(png));
    *text = message ? message : "unknown error";
    png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

Rgb8 read_png(const std::string& path, std::FILE* file) {
    std::string message;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &message, on_png_error, on_png_warning);
    if (!png) fail(path, "cannot start the PNG decoder");
    png_infop info = png_create_info_struct(png);
    Rgb8 out;
    std::vector<std::uint8_t> rgba;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        fail(path, "not a readable image (corrupt PNG: " + message + ")");
    }
    png_init_io(png, file);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    if (static_cast<double>(width) * height > 89478485.0) {
        png_destroy_read_struct(&png, &info, nullptr);
        fail(path, "image too large to decode safely");
    }
    png_set_expand(png);  // palette -> RGB, gray below 8 bits -> 8 bits, tRNS -> alpha
    if (depth == 16) png_set_strip_16(png);  // the high byte, as Pillow's 16-bit RGB unpacker
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_add_alpha(png, 0xFF, PNG_FILLER_AFTER);  // RGBA always, opaque where there was none
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    rgba.resize(static_cast<std::size_t>(width) * height * 4);
    std::vector<png_bytep> rows(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = rgba.data() + static_cast<std::size_t>(y) * width * 4;
    png_read_image(png, rows.data());
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);

    out.width = static_cast<int>(width);
    out.height = static_cast<int>(height);
    out.pixels.resize(static_cast<std::size_t>(width) * height * 3);
    for (std::size_t i = 0, n = static_cast<std::size_t>(width) * height; i < n; ++i) {
        std::uint8_t a = rgba[i * 4 + 3];
        for (int c = 0; c < 3; ++c)
            out.pixels[i * 3 + c] = a == 255 ? rgba[i * 4 + c] : over_white(rgba[i * 4 + c], a);
    }
    return out;
}

// ---- JPEG (libjpeg) ------------------------------------------------------------------------

struct JpegError {
    jpeg_error_mgr manager;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr info) {
    auto* error = reinterpret_cast<JpegError*>(info->err);
    (*info->err->format_message)(info, error->message);
    std::longjmp(error->jump, 1);
}

// EXIF orientation (tag 0x0112) from an APP1 "Exif\0\0" payload; 1 when absent or unreadable.
int exif_orientation(const std::uint8_t* data, std::size_t size) {
    if (size < 14 || std::memcmp(data, "Exif\0\0", 6) != 0) return 1;
    const std::uint8_t* tiff = data + 6;
    std::size_t n = size - 6;
    bool little = tiff[0] == 'I' && tiff[1] == 'I';
    if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return 1;
    auto u16 = [&](std::size_t at) -> std::uint32_t {
        return little ? tiff[at] | (tiff[at + 1] << 8) : (tiff[at] << 8) | tiff[at + 1];
    };
    auto u32 = [&](std::size_t at) -> std::uint32_t {
        return little ? u16(at) | (u16(at + 2) << 16) : (u16(at) << 16) | u16(at + 2);
    };
    std::size_t ifd = u32(4);
    if (ifd + 2 > n) return 1;
    std::uint32_t entries = u16(ifd);
    for (std::uint32_t e = 0; e < entries; ++e) {
        std::size_t at = ifd + 2 + e * 12;
        if (at + 12 > n) return 1;
        if (u16(at) == 0x0112) {
            std::uint32_t value = u16(at + 8);
            return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
        }
    }
    return 1;
}

// Pillow's ImageOps.exif_transpose for orientations 2..8.
Rgb8 orient(const Rgb8& in, int orientation) {
    if (orientation <= 1) return in;
    const int w = in.width, h = in.height;
    const bool swap = orientation >= 5;
    Rgb8 out;
    out.width = swap ? h : w;
    out.height = swap ? w : h;
    out.pixels.resize(in.pixels.size());
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x) {
            int sx = x, sy = y;
            switch (orientation) {
                case 2: sx = w - 1 - x; sy = y; break;          // mirror left-right
                case 3: sx = w - 1 - x; sy = h - 1 - y; break;  // rotate 180
                case 4: sx = x; sy = h - 1 - y; break;          // mirror top-bottom
                case 5: sx = y; sy = x; break;                  // transpose
                case 6: sx = y; sy = h - 1 - x; break;          // rotate 90 clockwise
                case 7: sx = w - 1 - y; sy = h - 1 - x; break;  // transverse
                case 8: sx = w - 1 - y; sy = x; break;          // rotate 90 counter-clockwise
            }
            std::memcpy(&out.pixels[(static_cast<std::size_t>(y) * out.width + x) * 3],
                        &in.pixels[(static_cast<std::size_t>(sy) * w + sx) * 3], 3);
        }
    }
    return out;
}

Rgb8 read_jpeg(const std::string& path, std::FILE* file) {
    jpeg_decompress_struct info;
    JpegError error;
    info.err = jpeg_std_error(&error.manager);
    error.manager.error_exit = on_jpeg_error;
    error.manager.output_message = [](j_common_ptr) {};  // warnings (e.g. extraneous bytes) stay quiet
    Rgb8 out;
    if (setjmp(error.jump)) {
        jpeg_destroy_decompress(&info);
        fail(path, std::string("not a readable image (") + error.message + ")");
    }
    jpeg_create_decompress(&info);
    jpeg_stdio_src(&info, file);
    jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&info, TRUE);
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&info);
        fail(path, "CMYK JPEG is not supported by this example");
    }
    if (static_cast<double>(info.image_width) * info.image_height > 89478485.0) {
        jpeg_destroy_decompress(&info);
        fail(path, "image too large to decode safely");
    }
    int orientation = 1;
    for (jpeg_saved_marker_ptr m = info.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1) orientation = std::max(orientation, exif_orientation(m->data, m->data_length));
    info.out_color_space = JCS_RGB;  // grayscale replicated to three channels
    jpeg_start_decompress(&info);
    out.width = static_cast<int>(info.output_width);
    out.height = static_cast<int>(info.output_height);
    out.pixels.resize(static_cast<std::size_t>(out.width) * out.height * 3);
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = out.pixels.data() + static_cast<std::size_t>(info.output_scanline) * out.width * 3;
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    return orient(out, orientation);
}

// ---- Pillow's resampling -------------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;

double triangle(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

struct Coefficients {
    int taps = 0;
    std::vector<int> first, count;  // per output pixel: first input pixel and how many
    std::vector<std::int32_t> weights;  // per output pixel, `taps` fixed-point weights
};

Coefficients coefficients(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filter_scale = std::max(scale, 1.0);
    const double support = 1.0 * filter_scale;  // the triangle's support is 1
    Coefficients c;
    c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.first.resize(out_size);
    c.count.resize(out_size);
    c.weights.assign(static_cast<std::size_t>(out_size) * c.taps, 0);
    std::vector<double> w(c.taps);
    for (int o = 0; o < out_size; ++o) {
        const double center = (o + 0.5) * scale;
        int lo = static_cast<int>(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = static_cast<int>(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        const int n = hi - lo;
        double total = 0.0;
        for (int k = 0; k < n; ++k) {
            w[k] = triangle((k + lo - center + 0.5) / filter_scale);
            total += w[k];
        }
        for (int k = 0; k < n; ++k) {
            double v = total != 0.0 ? w[k] / total : w[k];
            c.weights[static_cast<std::size_t>(o) * c.taps + k] =
                static_cast<std::int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
        }
        c.first[o] = lo;
        c.count[o] = n;
    }
    return c;
}

std::uint8_t clip8(std::int64_t v) {
    v >>= kPrecisionBits;
    return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

Rgb8 horizontal(const Rgb8& in, int width, int row0, int rows) {
    Coefficients c = coefficients(in.width, width);
    Rgb8 out;
    out.width = width;
    out.height = rows;
    out.pixels.resize(static_cast<std::size_t>(width) * rows * 3);
    for (int y = 0; y < rows; ++y) {
        const std::uint8_t* src = &in.pixels[static_cast<std::size_t>(y + row0) * in.width * 3];
        for (int x = 0; x < width; ++x) {
            const std::int32_t* k = &c.weights[static_cast<std::size_t>(x) * c.taps];
            for (int ch = 0; ch < 3; ++ch) {
                std::int64_t s = 1 << (kPrecisionBits - 1);
                for (int t = 0; t < c.count[x]; ++t) s += static_cast<std::int64_t>(src[(c.first[x] + t) * 3 + ch]) * k[t];
                out.pixels[(static_cast<std::size_t>(y) * width + x) * 3 + ch] = clip8(s);
            }
        }
    }
    return out;
}

Rgb8 vertical(const Rgb8& in, int height, const Coefficients& c, int row0) {
    Rgb8 out;
    out.width = in.width;
    out.height = height;
    out.pixels.resize(static_cast<std::size_t>(in.width) * height * 3);
    for (int y = 0; y < height; ++y) {
        const std::int32_t* k = &c.weights[static_cast<std::size_t>(y) * c.taps];
        for (int x = 0; x < in.width; ++x) {
            for (int ch = 0; ch < 3; ++ch) {
                std::int64_t s = 1 << (kPrecisionBits - 1);
                for (int t = 0; t < c.count[y]; ++t)
                    s += static_cast<std::int64_t>(
                             in.pixels[(static_cast<std::size_t>(c.first[y] - row0 + t) * in.width + x) * 3 + ch]) *
                         k[t];
                out.pixels[(static_cast<std::size_t>(y) * in.width + x) * 3 + ch] = clip8(s);
            }
        }
    }
    return out;
}

}  // namespace

Rgb8 read_rgb(const std::string& path) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!file) fail(path, "no such image file (or not readable)");
    unsigned char magic[8] = {0};
    std::size_t got = std::fread(magic, 1, sizeof magic, file.get());
    std::rewind(file.get());
    if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(path, file.get());
    if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg(path, file.get());
    fail(path, "not a readable image (this example decodes PNG and JPEG)");
}

Rgb8 resize_bilinear(const Rgb8& image, int width, int height) {
    const bool across = width != image.width, down = height != image.height;
    if (!across && !down) return image;
    Coefficients rows = coefficients(image.height, height);
    if (!down) return horizontal(image, width, 0, image.height);
    // Only the input rows the vertical pass reads go through the horizontal one (as Pillow).
    const int row0 = rows.first[0];
    const int row1 = rows.first[height - 1] + rows.count[height - 1];
    if (!across) return vertical(image, height, rows, 0);
    return vertical(horizontal(image, width, row0, row1 - row0), height, rows, row0);
}

std::vector<float> to_planar(const Rgb8& image) {
    const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
    std::vector<float> out(plane * 3);
    for (std::size_t i = 0; i < plane; ++i)
        for (int c = 0; c < 3; ++c) out[c * plane + i] = static_cast<float>(image.pixels[i * 3 + c]) / 255.0f;
    return out;
}

}  // namespace opticam
