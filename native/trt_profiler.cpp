// jdnas_trt_profiler: per-layer TensorRT timings of one ONNX model, as JSON.
//
// What it does, in order: registers TensorRT's plugins, parses the ONNX file, builds an engine
// (profiling verbosity DETAILED, a timing cache loaded from and saved to --timing-cache, FP16 by
// the builder flag on TensorRT 10 and by the graph's own types on 11, which has only strongly
// typed networks), checks deserialisation, binds device memory to every input and output
// (data-dependent outputs get getMaxOutputSize bytes), then times --runs inferences with CUDA
// events and --runs more under an IProfiler, flushing the L2 cache (a write of twice its size)
// before each. The engine inspector's JSON (layer names and fusions) is included, so the caller
// can tell an op's layers from its input producers'. Clocks are read with NVML where it was
// found at build time.
//
// Usage: jdnas_trt_profiler --onnx FILE [--precision fp16|fp32] [--timing-cache FILE]
//                           [--warmup N] [--runs N] [--workspace-mib N] [--out FILE]
//        jdnas_trt_profiler --info        (TensorRT version and device only)
// The JSON schema is documented in jdnas_sdk/latency/backends/tensorrt_native.py.

#include <NvInfer.h>
#include <NvInferPlugin.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#ifdef JDNAS_HAVE_NVML
#include <nvml.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace nvinfer1;

class Logger : public ILogger {
public:
    void log(Severity severity, char const* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    }
};

struct Options {
    std::string onnx, precision = "fp16", cache, out;
    int warmup = 5, runs = 50;
    int64_t workspaceMib = 2048;
    bool info = false;
};

void check(cudaError_t status, char const* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::string escape(std::string const& text) {
    std::string out;
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) { out += ' '; continue; }
        out += c;
    }
    return out;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error("missing value after " + a);
            return argv[++i];
        };
        if (a == "--onnx") o.onnx = next();
        else if (a == "--precision") o.precision = next();
        else if (a == "--timing-cache") o.cache = next();
        else if (a == "--warmup") o.warmup = std::stoi(next());
        else if (a == "--runs") o.runs = std::stoi(next());
        else if (a == "--workspace-mib") o.workspaceMib = std::stoll(next());
        else if (a == "--out") o.out = next();
        else if (a == "--info") o.info = true;
        else throw std::runtime_error("unknown argument " + a);
    }
    if (!o.info && o.onnx.empty()) throw std::runtime_error("--onnx FILE is required");
    if (o.precision != "fp16" && o.precision != "fp32") throw std::runtime_error("--precision must be fp16 or fp32");
    if (o.runs < 1 || o.warmup < 0) throw std::runtime_error("--runs must be >= 1 and --warmup >= 0");
    return o;
}

std::string deviceJson() {
    int device = 0, driver = 0, runtime = 0;
    cudaDeviceProp prop{};
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::ostringstream s;
    s << "\"tensorrt\": \"" << NV_TENSORRT_MAJOR << "." << NV_TENSORRT_MINOR << "." << NV_TENSORRT_PATCH << "\", "
      << "\"device\": \"" << escape(prop.name) << "\", \"sm\": \"" << prop.major << "." << prop.minor << "\", "
      << "\"cuda_driver_api\": " << driver << ", \"cuda_runtime\": " << runtime << ", \"l2_bytes\": " << prop.l2CacheSize;
#ifdef JDNAS_HAVE_NVML
    nvmlDevice_t handle;
    unsigned int sm = 0, mem = 0;
    char version[96] = {0};
    if (nvmlInit_v2() == NVML_SUCCESS && nvmlDeviceGetHandleByIndex_v2(device, &handle) == NVML_SUCCESS) {
        nvmlSystemGetDriverVersion(version, sizeof(version));
        nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM, &sm);
        nvmlDeviceGetClockInfo(handle, NVML_CLOCK_MEM, &mem);
        s << ", \"driver\": \"" << escape(version) << "\", \"clocks\": {\"sm_clock_mhz\": " << sm
          << ", \"mem_clock_mhz\": " << mem << "}";
        nvmlShutdown();
    }
#endif
    return s.str();
}

std::vector<char> readFile(std::string const& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Builds the serialised engine; loads and saves the timing cache beside the caller's table.
std::unique_ptr<IHostMemory> build(Options const& o, Logger& logger) {
    std::unique_ptr<IBuilder> builder(createInferBuilder(logger));
    // No creation flags: 10.x builds weakly typed networks (FP16 by the builder flag below); 11.x
    // networks are always strongly typed (its headers deprecate and ignore kSTRONGLY_TYPED), so
    // FP16 there comes from an FP16 graph (jdnas_sdk.detectors.onnx_fp16 writes one).
    std::unique_ptr<INetworkDefinition> network(builder->createNetworkV2(0U));
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
    if (!parser->parseFromFile(o.onnx.c_str(), static_cast<int32_t>(ILogger::Severity::kWARNING))) {
        std::string errors;
        for (int32_t i = 0; i < parser->getNbErrors(); ++i) errors += std::string(parser->getError(i)->desc()) + "; ";
        throw std::runtime_error("TensorRT could not parse " + o.onnx + ": " + errors);
    }
    std::unique_ptr<IBuilderConfig> config(builder->createBuilderConfig());
    config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, static_cast<size_t>(o.workspaceMib) << 20);
    config->setProfilingVerbosity(ProfilingVerbosity::kDETAILED);
#if NV_TENSORRT_MAJOR < 11
    if (o.precision == "fp16") config->setFlag(BuilderFlag::kFP16);
#endif
    std::vector<char> blob = o.cache.empty() ? std::vector<char>() : readFile(o.cache);
    std::unique_ptr<ITimingCache> cache(config->createTimingCache(blob.data(), blob.size()));
    if (!cache || !config->setTimingCache(*cache, false))
        throw std::runtime_error("TensorRT refused the timing cache " + o.cache + " (another TensorRT or GPU?): delete it");
    std::unique_ptr<IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan) throw std::runtime_error("TensorRT failed to build an engine (see its log above)");
    if (!o.cache.empty()) {
        std::unique_ptr<IHostMemory> saved(cache->serialize());
        std::string tmp = o.cache + ".tmp";
        std::ofstream(tmp, std::ios::binary).write(static_cast<char const*>(saved->data()), saved->size());
        std::rename(tmp.c_str(), o.cache.c_str());
    }
    return plan;
}

class LayerTimes : public IProfiler {
public:
    std::map<std::string, float> current;
    void reportLayerTime(char const* layerName, float ms) noexcept override { current[layerName] += ms; }
};

size_t elementSize(DataType type) {
    switch (type) {
        case DataType::kFLOAT: case DataType::kINT32: return 4;
        case DataType::kHALF: case DataType::kBF16: return 2;
        case DataType::kINT64: return 8;
        default: return 1;
    }
}

// Device memory for every I/O tensor; float inputs get reproducible random values.
std::vector<void*> bind(ICudaEngine& engine, IExecutionContext& context) {
    std::vector<void*> memory;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i) {
        char const* name = engine.getIOTensorName(i);
        Dims dims = context.getTensorShape(name);
        DataType type = engine.getTensorDataType(name);
        bool input = engine.getTensorIOMode(name) == TensorIOMode::kINPUT;
        int64_t count = 1;
        bool dynamic = false;
        for (int32_t d = 0; d < dims.nbDims; ++d) { dynamic |= dims.d[d] < 0; count *= dims.d[d] < 0 ? 1 : dims.d[d]; }
        if (dynamic && input) throw std::runtime_error(std::string("input ") + name + " has a dynamic shape; export it static");
        size_t bytes = dynamic ? static_cast<size_t>(context.getMaxOutputSize(name)) : count * elementSize(type);
        void* ptr = nullptr;
        check(cudaMalloc(&ptr, bytes > 0 ? bytes : 256), "cudaMalloc");
        if (input && (type == DataType::kFLOAT || type == DataType::kHALF)) {
            std::vector<float> values(count);
            for (float& v : values) v = normal(rng);
            std::vector<__half> halves;
            void const* host = values.data();
            if (type == DataType::kHALF) {
                for (float v : values) halves.push_back(__float2half(v));
                host = halves.data();
            }
            check(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
        } else {
            check(cudaMemset(ptr, 0, bytes > 0 ? bytes : 256), "cudaMemset");
        }
        if (!context.setTensorAddress(name, ptr)) throw std::runtime_error(std::string("cannot bind ") + name);
        memory.push_back(ptr);
    }
    return memory;
}

// --runs timed inferences (events), then --runs under the profiler; L2 flushed before each.
std::string measure(Options const& o, IExecutionContext& context) {
    cudaStream_t stream;
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    int device = 0, l2 = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device);
    size_t flushBytes = std::max<size_t>(2 * static_cast<size_t>(l2), 8u << 20);
    void* flush = nullptr;
    check(cudaMalloc(&flush, flushBytes), "cudaMalloc(flush)");
    auto enqueue = [&]() {
        if (!context.enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
    };
    for (int i = 0; i < o.warmup; ++i) enqueue();
    check(cudaStreamSynchronize(stream), "warm-up");
    cudaEvent_t start, end;
    cudaEventCreate(&start);
    cudaEventCreate(&end);
    std::ostringstream wall, layers;
    for (int i = 0; i < o.runs; ++i) {
        cudaMemsetAsync(flush, i & 0xff, flushBytes, stream);
        cudaEventRecord(start, stream);
        enqueue();
        cudaEventRecord(end, stream);
        check(cudaEventSynchronize(end), "timed run");
        float ms = 0;
        cudaEventElapsedTime(&ms, start, end);
        wall << (i ? ", " : "") << ms;
    }
    LayerTimes profiler;
    context.setProfiler(&profiler);
    for (int i = 0; i < o.runs; ++i) {
        profiler.current.clear();
        cudaMemsetAsync(flush, i & 0xff, flushBytes, stream);
        enqueue();
        check(cudaStreamSynchronize(stream), "profiled run");
        layers << (i ? ", " : "") << "{";
        bool first = true;
        for (auto const& [name, ms] : profiler.current) {
            layers << (first ? "" : ", ") << "\"" << escape(name) << "\": " << ms;
            first = false;
        }
        layers << "}";
    }
    context.setProfiler(nullptr);
    cudaFree(flush);
    cudaStreamDestroy(stream);
    return "\"wall_ms\": [" + wall.str() + "], \"layer_ms\": [" + layers.str() + "]";
}

std::string profile(Options const& o) {
    Logger logger;
    if (!initLibNvInferPlugins(&logger, "")) throw std::runtime_error("could not register TensorRT's plugins");
    std::unique_ptr<IHostMemory> plan = build(o, logger);
    std::unique_ptr<IRuntime> runtime(createInferRuntime(logger));
    std::unique_ptr<ICudaEngine> engine(runtime->deserializeCudaEngine(plan->data(), plan->size()));
    if (!engine) throw std::runtime_error("TensorRT could not deserialise the engine it built");
    std::unique_ptr<IExecutionContext> context(engine->createExecutionContext());
    if (!context) throw std::runtime_error("TensorRT could not create an execution context");
    std::vector<void*> memory = bind(*engine, *context);
    std::unique_ptr<IEngineInspector> inspector(engine->createEngineInspector());
    inspector->setExecutionContext(context.get());
    std::string layers = inspector->getEngineInformation(LayerInformationFormat::kJSON);
    std::string timings = measure(o, *context);
    for (void* ptr : memory) cudaFree(ptr);
    return "{" + deviceJson() + ", \"precision\": \"" + o.precision + "\", \"runs\": " + std::to_string(o.runs) +
           ", \"engine\": " + layers + ", " + timings + "}";
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options o = parse(argc, argv);
        std::string json = o.info ? "{" + deviceJson() + "}" : profile(o);
        if (o.out.empty()) {
            std::cout << json << std::endl;
        } else {
            std::ofstream(o.out) << json << std::endl;
        }
        return 0;
    } catch (std::exception const& e) {
        std::cerr << "jdnas_trt_profiler: " << e.what() << std::endl;
        return 1;
    }
}
