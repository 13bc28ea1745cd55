#include "explainer.hpp"

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <openvino/core/model.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/parameter.hpp>
#include <openvino/op/util/multi_subgraph_base.hpp>

#include "image.hpp"

namespace opticam {
namespace {

json::Value read_manifest(const std::string& bundle) {
    std::ifstream in(bundle + "/manifest.json", std::ios::binary);
    if (!in) throw std::runtime_error(bundle + ": no manifest.json (is this a bundle written by opticam-rt export?)");
    std::stringstream text;
    text << in.rdbuf();
    try {
        return json::parse(text.str());
    } catch (const std::exception& e) {
        throw std::runtime_error(bundle + "/manifest.json: " + e.what());
    }
}

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
}

// OpenVINO's ONNX reader turns a graph input that has a default (an initializer of the same
// name) into a Constant, inside Loop bodies too. Find those Constants by name, in the model and
// every sub-graph.
void find_constants(const std::shared_ptr<ov::Model>& model, const std::string& name,
                    std::vector<std::pair<std::shared_ptr<ov::Model>, std::shared_ptr<ov::op::v0::Constant>>>& found) {
    for (const auto& op : model->get_ordered_ops()) {
        if (auto c = std::dynamic_pointer_cast<ov::op::v0::Constant>(op)) {
            if (c->get_friendly_name() == name || c->output(0).get_names().count(name)) found.emplace_back(model, c);
        }
        if (auto sub = std::dynamic_pointer_cast<ov::op::util::MultiSubGraphOp>(op)) {
            for (std::size_t i = 0; i < sub->get_internal_subgraphs_size(); ++i)
                find_constants(sub->get_function(static_cast<int>(i)), name, found);
        }
    }
}

template <typename T>
void set_default(const std::shared_ptr<ov::Model>& model, const std::string& name, T value, ov::element::Type type) {
    std::vector<std::pair<std::shared_ptr<ov::Model>, std::shared_ptr<ov::op::v0::Constant>>> found;
    find_constants(model, name, found);
    if (found.empty()) throw std::runtime_error("the graph has no overridable '" + name + "' (OpenVINO folded it)");
    for (auto& [owner, old] : found) {
        auto fresh = std::make_shared<ov::op::v0::Constant>(type, old->get_shape(), std::vector<T>(ov::shape_size(old->get_shape()), value));
        fresh->set_friendly_name(old->get_friendly_name());
        fresh->output(0).set_names(old->output(0).get_names());
        ov::replace_node(old, fresh);
        owner->validate_nodes_and_infer_types();
    }
}

}  // namespace

std::vector<std::string> explainer_methods(const std::string& bundle) {
    std::vector<std::string> out;
    const json::Value manifest = read_manifest(bundle);
    if (manifest.has("explainers"))
        for (const auto& [name, _] : manifest.at("explainers").object) out.push_back(name);
    return out;
}

Explainer::Explainer(const std::string& bundle, const std::string& method, const Options& options) : method_(method) {
    const json::Value manifest = read_manifest(bundle);
    if (!manifest.has("explainers") || manifest.at("explainers").object.empty())
        throw std::runtime_error(bundle + ": the bundle has no explainer graphs (export it without --no-explainers)");
    const json::Value& explainers = manifest.at("explainers");
    if (!explainers.has(method)) {
        std::vector<std::string> names;
        for (const auto& [name, _] : explainers.object) names.push_back(name);
        throw std::runtime_error("no explainer graph for " + method + " in " + bundle + " (it has: " + join(names) + ")");
    }
    const json::Value& entry = explainers.at(method);
    height_ = static_cast<int>(manifest.at("input_size").at(0).num());
    width_ = static_cast<int>(manifest.at("input_size").at(1).num());
    num_classes_ = static_cast<std::int64_t>(manifest.at("num_classes").num());
    if (manifest.has("class_names"))
        for (const auto& v : manifest.at("class_names").array) class_names_.push_back(v.kind == json::Value::Kind::String ? v.string : "");
    const json::Value& inputs = entry.at("inputs");
    has_steps_ = entry.at("outputs").has("steps");

    auto check = [&](const char* name, bool given) {
        if (given && !inputs.has(name)) throw std::runtime_error("--" + std::string(name) + " is not an option of " + method);
    };
    check("iterations", options.iterations.has_value());
    check("lr", options.lr.has_value());
    check("tol", options.tol.has_value());
    check("patience", options.patience.has_value());
    if (options.iterations && *options.iterations < 1) throw std::runtime_error("--iterations must be at least 1");
    if (options.lr && !(*options.lr > 0)) throw std::runtime_error("--lr must be positive");
    if (options.tol && !(*options.tol >= 0)) throw std::runtime_error("--tol must be 0 or more");
    if (options.patience && *options.patience < 1) throw std::runtime_error("--patience must be at least 1");

    const std::string path = bundle + "/" + entry.at("file").str();
    if (!std::ifstream(path)) throw std::runtime_error(path + ": explainer graph missing from the bundle");
    ov::Core core;
    std::shared_ptr<ov::Model> model = core.read_model(path);  // weights.bin beside it (external data)

    // `target` is fed per call: its Constant (the default -1) becomes a Parameter (N,).
    std::vector<std::pair<std::shared_ptr<ov::Model>, std::shared_ptr<ov::op::v0::Constant>>> targets;
    find_constants(model, "target", targets);
    if (targets.size() != 1 || targets[0].first != model)
        throw std::runtime_error(path + ": expected one top-level 'target' default in the graph");
    auto target = std::make_shared<ov::op::v0::Parameter>(ov::element::i64, ov::PartialShape{ov::Dimension::dynamic()});
    ov::replace_node(targets[0].second, target);
    target->set_friendly_name("target");
    target->output(0).set_names({"target"});
    model->add_parameters({target});
    // The method's options are fixed per compiled graph.
    if (options.iterations) set_default<std::int64_t>(model, "iterations", *options.iterations, ov::element::i64);
    if (options.lr) set_default<float>(model, "lr", *options.lr, ov::element::f32);
    if (options.tol) set_default<float>(model, "tol", *options.tol, ov::element::f32);
    if (options.patience) set_default<std::int64_t>(model, "patience", *options.patience, ov::element::i64);
    model->validate_nodes_and_infer_types();

    ov::AnyMap config{ov::hint::inference_precision(ov::element::f32)};  // no bf16/f16 on CPUs that have it
    if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
    compiled_ = core.compile_model(model, "CPU", config);
}

Result Explainer::explain(const std::vector<float>& pixels, std::int64_t target) const {
    const std::size_t plane = static_cast<std::size_t>(height_) * width_;
    if (pixels.size() != 3 * plane)
        throw std::runtime_error("image must be 3 x " + std::to_string(height_) + " x " + std::to_string(width_) + " floats");
    if (target < -1 || target >= num_classes_)
        throw std::runtime_error("target class " + std::to_string(target) + " is out of range: the model has classes 0.." +
                                 std::to_string(num_classes_ - 1) + " (-1 = top-1)");
    ov::InferRequest request = compiled_.create_infer_request();  // per call: see the thread model
    std::vector<float> image(pixels);
    std::int64_t wanted = target;
    request.set_tensor("image", ov::Tensor(ov::element::f32, ov::Shape{1, 3, static_cast<std::size_t>(height_),
                                                                       static_cast<std::size_t>(width_)}, image.data()));
    request.set_tensor("target", ov::Tensor(ov::element::i64, ov::Shape{1}, &wanted));
    const auto start = std::chrono::steady_clock::now();
    request.infer();
    const auto stop = std::chrono::steady_clock::now();

    Result r;
    r.height = height_;
    r.width = width_;
    ov::Tensor map = request.get_tensor("map");
    if (map.get_size() != plane) throw std::runtime_error("the graph returned a map of unexpected size");
    r.map.assign(map.data<const float>(), map.data<const float>() + plane);
    r.target = request.get_tensor("explained_target").data<const std::int64_t>()[0];
    r.score = request.get_tensor("score").data<const float>()[0];
    r.masked_score = request.get_tensor("masked_score").data<const float>()[0];
    if (has_steps_) r.steps = request.get_tensor("steps").data<const std::int64_t>()[0];
    if (r.target >= 0 && static_cast<std::size_t>(r.target) < class_names_.size()) r.class_name = class_names_[r.target];
    r.seconds = std::chrono::duration<double>(stop - start).count();
    return r;
}

Result Explainer::explain_file(const std::string& image_path, std::int64_t target) const {
    return explain(to_planar(resize_bilinear(read_rgb(image_path), width_, height_)), target);
}

}  // namespace opticam
