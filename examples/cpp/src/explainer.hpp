// opticam::Explainer: one method of an opticam-rt bundle, compiled once with OpenVINO, then
// called per image. The demo executable (main.cpp) is a thin command line around it.
//
// Thread model: the constructor reads and compiles the graph (slow: do it once, at start-up).
// explain() is safe to call from several threads at once on the same Explainer: each call makes
// its own ov::InferRequest from the shared ov::CompiledModel (which OpenVINO documents as
// thread-safe), so calls never share buffers. A service that wants to avoid the request set-up
// per call keeps one Explainer per method and a pool of worker threads; the options below are
// fixed when the graph is compiled, so another set of options is another Explainer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "json.hpp"

namespace opticam {

struct Options {
    std::optional<std::int64_t> iterations;  // Opti-CAM: Adam steps (graph default 100)
    std::optional<float> lr;                 // Opti-CAM: learning rate (0.1)
    std::optional<float> tol;                // Opti-CAM: early-stop tolerance (0 = every step)
    std::optional<std::int64_t> patience;    // Opti-CAM: steps within tol before stopping (5)
    int threads = 0;                         // OpenVINO inference threads, 0 = its choice
};

struct Result {
    std::vector<float> map;  // height * width, row-major, in [0, 1]
    int height = 0, width = 0;
    std::int64_t target = -1;  // the class explained
    std::string class_name;
    float score = 0.f;         // softmax probability of target on the image
    float masked_score = 0.f;  // the same on image * map
    std::int64_t steps = -1;   // Opti-CAM: Adam steps used; -1 for the other methods
    double seconds = 0.0;      // inference time of this call
};

class Explainer {
public:
    // bundle: the directory `opticam-rt export` wrote; method: a key of manifest.json's
    // `explainers` (opti-cam, grad-cam, ...). Throws std::runtime_error naming the problem.
    Explainer(const std::string& bundle, const std::string& method, const Options& options = {});

    // pixels: planar RGB (3, H, W) float in [0, 1] at input_size(); target -1 = top-1.
    Result explain(const std::vector<float>& pixels, std::int64_t target = -1) const;

    // A photo file (PNG/JPEG), decoded and resized as opticam-rt's Python load_image does.
    Result explain_file(const std::string& image_path, std::int64_t target = -1) const;

    int height() const { return height_; }
    int width() const { return width_; }
    std::int64_t num_classes() const { return num_classes_; }
    const std::string& method() const { return method_; }

private:
    std::string method_;
    int height_ = 0, width_ = 0;
    std::int64_t num_classes_ = 0;
    std::vector<std::string> class_names_;
    bool has_steps_ = false;
    mutable ov::CompiledModel compiled_;  // create_infer_request is not const, yet thread-safe
};

// The manifest's methods (keys of `explainers`), for messages and --help.
std::vector<std::string> explainer_methods(const std::string& bundle);

}  // namespace opticam
