#!/usr/bin/env node
// Saliency maps from an opticam-rt bundle in Node.js: no Python, only onnxruntime-node and pngjs.
//
//   npm install --ignore-scripts          (in this directory; the CPU binaries ship in the package)
//   node explain.js BUNDLE_DIR IMAGE.png OUT_PREFIX [--methods opti-cam,grad-cam] [--target C]
//                   [--iterations N]
//
// Each method's explainer graph (manifest.json -> explainers -> METHOD -> file) does the whole
// method in one session.run, Opti-CAM's 100 Adam steps included. For every method this writes
// OUT_PREFIX.METHOD.png (the map as 8-bit grey) and OUT_PREFIX.METHOD.f32 (the map as raw
// little-endian float32, H x W), and prints one JSON line: method, target, score, masked_score,
// steps, seconds.
//
// The PNG should already have the model's input size (e.g. 224 x 224); other sizes are resized
// here with a plain bilinear filter, which is not the resize opticam-rt's Python code uses.

"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");
const { PNG } = require("pngjs");

function parseArgs(argv) {
  const positional = [];
  const options = { methods: "opti-cam,grad-cam", target: null, iterations: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith("--")) {
      const key = arg.slice(2);
      if (!(key in options)) throw new Error(`unknown option ${arg}`);
      options[key] = argv[++i];
    } else {
      positional.push(arg);
    }
  }
  if (positional.length !== 3) {
    throw new Error("usage: node explain.js BUNDLE_DIR IMAGE.png OUT_PREFIX [--methods a,b] [--target C] [--iterations N]");
  }
  const [bundle, image, outPrefix] = positional;
  return { bundle, image, outPrefix, ...options };
}

// PNG (any size, RGB or RGBA) -> Float32Array (1, 3, H, W) of pixels in [0, 1], channel-planar.
function readImage(file, height, width) {
  const png = PNG.sync.read(fs.readFileSync(file));
  const out = new Float32Array(3 * height * width);
  const sy = png.height / height;
  const sx = png.width / width;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      // Half-pixel centres; an image already at the model's size is copied exactly.
      const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), png.height - 1);
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), png.width - 1);
      const y0 = Math.floor(fy), x0 = Math.floor(fx);
      const y1 = Math.min(y0 + 1, png.height - 1), x1 = Math.min(x0 + 1, png.width - 1);
      const wy = fy - y0, wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const at = (yy, xx) => png.data[(yy * png.width + xx) * 4 + c];
        const top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx;
        const bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx;
        out[c * height * width + y * width + x] = (top * (1 - wy) + bottom * wy) / 255;
      }
    }
  }
  return out;
}

function writeMap(prefix, method, map, height, width) {
  fs.writeFileSync(`${prefix}.${method}.f32`, Buffer.from(map.buffer, map.byteOffset, map.byteLength));
  const png = new PNG({ width, height });
  for (let i = 0; i < height * width; i++) {
    const v = Math.round(Math.min(Math.max(map[i], 0), 1) * 255);
    png.data[4 * i] = png.data[4 * i + 1] = png.data[4 * i + 2] = v;
    png.data[4 * i + 3] = 255;
  }
  fs.writeFileSync(`${prefix}.${method}.png`, PNG.sync.write(png));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const manifest = JSON.parse(fs.readFileSync(path.join(args.bundle, "manifest.json"), "utf8"));
  const [height, width] = manifest.input_size;
  const pixels = readImage(args.image, height, width);
  for (const method of args.methods.split(",")) {
    const entry = (manifest.explainers || {})[method];
    if (!entry) throw new Error(`${args.bundle} has no explainer graph for ${method}; re-export the bundle`);
    // logSeverityLevel 3: the overridable defaults (inputs that have initializers) would warn.
    const session = await ort.InferenceSession.create(path.join(args.bundle, entry.file), { logSeverityLevel: 3 });
    // Only the image is required: every other input has its default inside the graph.
    const feeds = { image: new ort.Tensor("float32", pixels, [1, 3, height, width]) };
    if (args.target !== null) feeds.target = new ort.Tensor("int64", BigInt64Array.from([BigInt(args.target)]), [1]);
    if (args.iterations !== null && "iterations" in entry.inputs) {
      feeds.iterations = new ort.Tensor("int64", BigInt64Array.from([BigInt(args.iterations)]), []);
    }
    const start = process.hrtime.bigint();
    const out = await session.run(feeds);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    writeMap(args.outPrefix, method, out.map.data, height, width);
    console.log(
      JSON.stringify({
        method,
        target: Number(out.explained_target.data[0]),
        score: out.score.data[0],
        masked_score: out.masked_score.data[0],
        steps: out.steps ? Number(out.steps.data[0]) : null,
        seconds,
      })
    );
  }
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});
