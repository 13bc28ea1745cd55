// opticam-explain BUNDLE METHOD IMAGE OUT.npy [--target K] [--iterations N] [--lr X] [--tol X]
//                 [--patience N] [--threads N] [--repeat N] [--concurrent N] [--input-npy PATH]
// Writes the saliency map (model resolution, float32) as .npy and prints one JSON line.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "explainer.hpp"
#include "image.hpp"

namespace {

const char* kUsage =
    "usage: opticam-explain BUNDLE METHOD IMAGE OUT.npy [--target K] [--iterations N] [--lr X] [--tol X]\n"
    "                       [--patience N] [--threads N] [--repeat N] [--concurrent N] [--input-npy PATH]\n"
    "  BUNDLE  a directory written by `opticam-rt export`; METHOD  opti-cam, grad-cam, ... (manifest explainers)\n"
    "  IMAGE   a PNG or JPEG photo, resized to the model's input size as opticam-rt's load_image does\n"
    "  OUT.npy the map (H, W) float32 in [0, 1]; one JSON line goes to stdout\n"
    "  --repeat N     run N times and report the fastest and mean inference seconds\n"
    "  --concurrent N then call explain from N threads at once on the same Explainer and report\n"
    "                 whether every map equals the serial one (the thread model, exercised)\n"
    "  --input-npy P  also write the model input (3, H, W) float32 to P\n";

// A float32 array as a version 1.0 .npy file (little-endian, C order).
void write_npy(const std::string& path, const float* data, const std::vector<std::size_t>& shape) {
    std::string dims;
    for (std::size_t d : shape) dims += std::to_string(d) + ", ";
    if (shape.size() > 1) dims.erase(dims.size() - 2);  // (H, W); a 1-d shape keeps "(N, )"
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    const std::size_t unpadded = 10 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    std::ofstream out(path, std::ios::binary);
    if (!out) throw std::runtime_error(path + ": cannot write the output file");
    out.write("\x93NUMPY\x01\x00", 8);
    const std::uint16_t len = static_cast<std::uint16_t>(header.size());
    const char lens[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
    out.write(lens, 2);
    out << header;
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
    if (!out) throw std::runtime_error(path + ": write failed");
}

// The whole of `text` parsed by `parse` (std::stoll or std::stof), else an error naming the flag.
template <typename T, typename Parse>
T parsed(const std::string& flag, const std::string& text, const char* kind, Parse parse) {
    std::size_t used = 0;
    T v{};
    try {
        v = parse(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || text.empty()) throw std::runtime_error(flag + " expects " + kind + ", got '" + text + "'");
    return v;
}

long long integer(const std::string& flag, const std::string& text) {
    return parsed<long long>(flag, text, "an integer", [](const std::string& t, std::size_t* u) { return std::stoll(t, u); });
}

float real(const std::string& flag, const std::string& text) {
    return parsed<float>(flag, text, "a number", [](const std::string& t, std::size_t* u) { return std::stof(t, u); });
}

std::string number(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::vector<std::string> positional;
        opticam::Options options;
        long long target = -1, repeat = 1, concurrent = 0;
        std::string input_npy;
        for (int i = 1; i < argc; ++i) {
            std::string arg = argv[i];
            if (arg == "-h" || arg == "--help") {
                std::cout << kUsage;
                return 0;
            }
            if (arg.rfind("--", 0) == 0) {
                if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
                std::string value = argv[++i];
                if (arg == "--target") target = integer(arg, value);
                else if (arg == "--iterations") options.iterations = integer(arg, value);
                else if (arg == "--lr") options.lr = real(arg, value);
                else if (arg == "--tol") options.tol = real(arg, value);
                else if (arg == "--patience") options.patience = integer(arg, value);
                else if (arg == "--threads") options.threads = static_cast<int>(integer(arg, value));
                else if (arg == "--repeat") repeat = integer(arg, value);
                else if (arg == "--concurrent") concurrent = integer(arg, value);
                else if (arg == "--input-npy") input_npy = value;
                else throw std::runtime_error("unknown option " + arg + " (see --help)");
            } else {
                positional.push_back(arg);
            }
        }
        if (positional.size() != 4) throw std::runtime_error("expected BUNDLE METHOD IMAGE OUT.npy (see --help)");
        if (repeat < 1) throw std::runtime_error("--repeat must be at least 1");
        if (concurrent < 0 || concurrent > 64) throw std::runtime_error("--concurrent must be 0..64");
        const std::string &bundle = positional[0], &method = positional[1], &image = positional[2], &out = positional[3];

        opticam::Explainer explainer(bundle, method, options);
        const opticam::Rgb8 rgb = opticam::read_rgb(image);
        const std::vector<float> pixels =
            opticam::to_planar(opticam::resize_bilinear(rgb, explainer.width(), explainer.height()));
        if (!input_npy.empty())
            write_npy(input_npy, pixels.data(), {3, static_cast<std::size_t>(explainer.height()),
                                                 static_cast<std::size_t>(explainer.width())});
        opticam::Result result;
        double best = 0, total = 0;
        for (long long k = 0; k < repeat; ++k) {
            result = explainer.explain(pixels, target);
            best = k == 0 ? result.seconds : std::min(best, result.seconds);
            total += result.seconds;
        }
        std::string concurrency;
        if (concurrent > 0) {
            std::vector<opticam::Result> results(static_cast<std::size_t>(concurrent));
            std::vector<std::string> errors(results.size());
            std::vector<std::thread> workers;
            for (std::size_t k = 0; k < results.size(); ++k)
                workers.emplace_back([&, k] {
                    try {
                        results[k] = explainer.explain(pixels, target);
                    } catch (const std::exception& e) {
                        errors[k] = e.what();
                    }
                });
            for (auto& w : workers) w.join();
            bool identical = true;
            for (std::size_t k = 0; k < results.size(); ++k) {
                if (!errors[k].empty()) throw std::runtime_error("concurrent call " + std::to_string(k) + ": " + errors[k]);
                identical = identical && results[k].map == result.map && results[k].target == result.target &&
                            results[k].score == result.score && results[k].masked_score == result.masked_score;
            }
            concurrency = ", \"concurrent\": " + std::to_string(concurrent) +
                          ", \"concurrent_identical\": " + (identical ? "true" : "false");
        }
        write_npy(out, result.map.data(), {static_cast<std::size_t>(result.height), static_cast<std::size_t>(result.width)});
        std::string line = "{\"method\": " + opticam::json::quote(method) + ", \"target\": " + std::to_string(result.target) +
                           ", \"class_name\": " + opticam::json::quote(result.class_name) +
                           ", \"score\": " + number(result.score) + ", \"masked_score\": " + number(result.masked_score);
        if (result.steps >= 0) line += ", \"steps\": " + std::to_string(result.steps);
        line += ", \"seconds\": " + number(best) + ", \"mean_seconds\": " + number(total / repeat) +
                ", \"runs\": " + std::to_string(repeat) + concurrency + "}";
        std::cout << line << std::endl;
        return 0;
    } catch (const std::exception& e) {
        std::string text = e.what();
        for (char& c : text)
            if (c == '\n' || c == '\r') c = ' ';
        std::cerr << "opticam-explain: " << text << std::endl;
        return 1;
    }
}
