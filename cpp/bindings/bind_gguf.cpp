// Python surface of the GGUF reader: _core.GGUFFile. python/decollama/gguf_file.py wraps it.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <memory>

#include "bindings/bindings.h"
#include "gguf/gguf_file.h"
#include "gguf/tensor_dequantize.h"
#include "quant/weight_types.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

nb::object steal_checked(PyObject* o) {
    if (o == nullptr) throw nb::python_error();
    return nb::steal(o);
}

// GGUF strings should be UTF-8; bytes that are not decode as lone surrogates so that
// s.encode("utf-8", "surrogateescape") gives back the exact file bytes.
nb::object to_str(const std::string& s) {
    return steal_checked(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape"));
}

template <class T, class Convert>
nb::object to_list(const std::vector<T>& values, Convert convert) {
    nb::object list = steal_checked(PyList_New(static_cast<Py_ssize_t>(values.size())));
    for (size_t k = 0; k < values.size(); ++k)
        PyList_SET_ITEM(list.ptr(), static_cast<Py_ssize_t>(k), convert(values[k]).release().ptr());
    return list;
}

nb::object to_python(const GGUFValue& v);

nb::object scalar_to_python(GGUFValueType type, const GGUFValue& v) {
    switch (type) {
        case GGUFValueType::UINT8:
        case GGUFValueType::UINT16:
        case GGUFValueType::UINT32:
        case GGUFValueType::UINT64: return steal_checked(PyLong_FromUnsignedLongLong(v.u));
        case GGUFValueType::INT8:
        case GGUFValueType::INT16:
        case GGUFValueType::INT32:
        case GGUFValueType::INT64: return steal_checked(PyLong_FromLongLong(v.i));
        case GGUFValueType::FLOAT32:
        case GGUFValueType::FLOAT64: return steal_checked(PyFloat_FromDouble(v.f));
        case GGUFValueType::BOOL: return nb::bool_(v.u != 0);
        case GGUFValueType::STRING: return to_str(v.s);
        case GGUFValueType::ARRAY: break;
    }
    return nb::none();
}

nb::object array_to_python(const GGUFValue& v) {
    switch (v.elem_type) {
        case GGUFValueType::UINT8:
        case GGUFValueType::UINT16:
        case GGUFValueType::UINT32:
        case GGUFValueType::UINT64:
            return to_list(v.arr_u, [](uint64_t x) { return steal_checked(PyLong_FromUnsignedLongLong(x)); });
        case GGUFValueType::BOOL:
            return to_list(v.arr_u, [](uint64_t x) -> nb::object { return nb::bool_(x != 0); });
        case GGUFValueType::INT8:
        case GGUFValueType::INT16:
        case GGUFValueType::INT32:
        case GGUFValueType::INT64:
            return to_list(v.arr_i, [](int64_t x) { return steal_checked(PyLong_FromLongLong(x)); });
        case GGUFValueType::FLOAT32:
        case GGUFValueType::FLOAT64:
            return to_list(v.arr_f, [](double x) { return steal_checked(PyFloat_FromDouble(x)); });
        case GGUFValueType::STRING: return to_list(v.arr_s, to_str);
        case GGUFValueType::ARRAY: return to_list(v.arr_nested, to_python);
    }
    return nb::none();
}

nb::object to_python(const GGUFValue& v) { return v.is_array() ? array_to_python(v) : scalar_to_python(v.type, v); }

// Metadata as a dict in file order: key -> int, float, bool, str or (nested) list.
nb::dict metadata_dict(const GGUFFile& f) {
    nb::dict d;
    for (const auto& [key, value] : f.metadata()) d[to_str(key)] = to_python(value);
    return d;
}

// Numpy-order shape: the reverse of GGML's ne.
nb::tuple numpy_shape(const GGUFTensorInfo& t) {
    nb::list dims;
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) dims.append(*it);
    return nb::tuple(dims);
}

// [(name, shape, type name, offset, nbytes)] in file order.
nb::list tensor_infos(const GGUFFile& f) {
    nb::list out;
    for (const GGUFTensorInfo& t : f.tensors()) {
        const WeightTypeTraits* traits = find_weight_type(static_cast<uint32_t>(t.type));
        out.append(nb::make_tuple(to_str(t.name), numpy_shape(t), traits->name, t.offset, t.nbytes));
    }
    return out;
}

nb::ndarray<nb::numpy, float> dequantize(const GGUFFile& f, const std::string& name) {
    const GGUFTensorInfo& t = f.tensor(name);
    size_t shape[4];
    const size_t ndim = t.shape.size();
    for (size_t d = 0; d < ndim; ++d) shape[d] = static_cast<size_t>(t.shape[ndim - 1 - d]);

    auto values = std::make_unique<float[]>(static_cast<size_t>(t.n_elements()));
    {
        nb::gil_scoped_release no_gil;
        dequantize_tensor(f, t, values.get());
    }
    nb::capsule owner(values.get(), [](void* p) noexcept { delete[] static_cast<float*>(p); });
    return nb::ndarray<nb::numpy, float>(values.release(), ndim, shape, owner);
}

// Read-only uint8 view of the tensor's bytes in the mapping; the array keeps the file open.
nb::ndarray<nb::numpy, const uint8_t, nb::ndim<1>> raw(const GGUFFile& f, const std::string& name) {
    const GGUFTensorInfo& t = f.tensor(name);
    const size_t shape[1] = {static_cast<size_t>(t.nbytes)};
    return nb::ndarray<nb::numpy, const uint8_t, nb::ndim<1>>(t.data, 1, shape, nb::find(&f));
}

}  // namespace

void bind_gguf(nb::module_& m) {
    nb::class_<GGUFFile>(m, "GGUFFile", "A parsed, memory-mapped GGUF file (see decollama.GGUFFile).")
        .def(nb::init<const std::string&>(), "path"_a, nb::call_guard<nb::gil_scoped_release>())
        .def_prop_ro("path", &GGUFFile::path)
        .def_prop_ro("version", &GGUFFile::version)
        .def_prop_ro("alignment", &GGUFFile::alignment)
        .def_prop_ro("data_offset", &GGUFFile::data_offset)
        .def_prop_ro("file_size", &GGUFFile::file_size)
        .def_prop_ro("architecture", [](const GGUFFile& f) { return to_str(f.architecture()); })
        .def("metadata", &metadata_dict, "Metadata dict in file order.")
        .def("tensor_infos", &tensor_infos, "[(name, numpy shape, type name, offset, nbytes)] in file order.")
        .def("dequantize", &dequantize, "name"_a, "The tensor as float32, numpy-order shape.")
        .def("raw", &raw, "name"_a, "Read-only zero-copy uint8 view of the tensor's bytes.");
}

}  // namespace decollama::py
