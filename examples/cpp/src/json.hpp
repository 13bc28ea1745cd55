// A small JSON reader for manifest.json: objects, arrays, strings (with \u escapes), numbers,
// true/false/null. Enough for the bundle manifest; not a general-purpose library.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace opticam::json {

struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    double number = 0.0;
    std::string string;
    std::vector<Value> array;
    std::map<std::string, Value> object;

    bool has(const std::string& key) const { return kind == Kind::Object && object.count(key) > 0; }
    const Value& at(const std::string& key) const {
        if (kind != Kind::Object) throw std::runtime_error("expected a JSON object around key '" + key + "'");
        auto it = object.find(key);
        if (it == object.end()) throw std::runtime_error("missing key '" + key + "'");
        return it->second;
    }
    const Value& at(std::size_t i) const {
        if (kind != Kind::Array || i >= array.size()) throw std::runtime_error("JSON array index out of range");
        return array[i];
    }
    const std::string& str() const {
        if (kind != Kind::String) throw std::runtime_error("expected a JSON string");
        return string;
    }
    double num() const {
        if (kind != Kind::Number) throw std::runtime_error("expected a JSON number");
        return number;
    }
};

class Parser {
public:
    explicit Parser(const std::string& text) : s_(text) {}

    Value parse() {
        Value v = value();
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    const std::string& s_;
    std::size_t i_ = 0;

    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("invalid JSON at offset " + std::to_string(i_) + ": " + what);
    }
    void space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    char peek() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        return s_[i_];
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++i_;
    }
    bool word(const char* w) {
        std::size_t n = std::char_traits<char>::length(w);
        if (s_.compare(i_, n, w) == 0) {
            i_ += n;
            return true;
        }
        return false;
    }

    Value value() {
        Value v;
        char c = peek();
        if (c == '{') {
            v.kind = Value::Kind::Object;
            ++i_;
            if (peek() == '}') { ++i_; return v; }
            for (;;) {
                if (peek() != '"') fail("expected a key");
                std::string key = string_literal();
                expect(':');
                v.object[key] = value();
                if (peek() == ',') { ++i_; continue; }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            v.kind = Value::Kind::Array;
            ++i_;
            if (peek() == ']') { ++i_; return v; }
            for (;;) {
                v.array.push_back(value());
                if (peek() == ',') { ++i_; continue; }
                expect(']');
                return v;
            }
        }
        if (c == '"') {
            v.kind = Value::Kind::String;
            v.string = string_literal();
            return v;
        }
        if (word("true")) { v.kind = Value::Kind::Bool; v.boolean = true; return v; }
        if (word("false")) { v.kind = Value::Kind::Bool; return v; }
        if (word("null")) return v;
        if (word("NaN")) { v.kind = Value::Kind::Number; v.number = 0.0 / 0.0; return v; }  // Python's json writes NaN
        return number();
    }

    Value number() {
        std::size_t start = i_;
        if (s_[i_] == '-' || s_[i_] == '+') ++i_;
        if (word("Infinity")) {
            Value v;
            v.kind = Value::Kind::Number;
            v.number = s_[start] == '-' ? -1e308 * 10 : 1e308 * 10;
            return v;
        }
        while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' || s_[i_] == 'e' ||
                                  s_[i_] == 'E' || s_[i_] == '-' || s_[i_] == '+'))
            ++i_;
        if (i_ == start) fail("unexpected character");
        Value v;
        v.kind = Value::Kind::Number;
        try {
            v.number = std::stod(s_.substr(start, i_ - start));
        } catch (const std::exception&) {
            fail("bad number");
        }
        return v;
    }

    static void utf8(std::string& out, std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    std::uint32_t hex4() {
        if (i_ + 4 > s_.size()) fail("short \\u escape");
        std::uint32_t cp = 0;
        for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else fail("bad \\u escape");
        }
        return cp;
    }

    std::string string_literal() {
        expect('"');
        std::string out;
        while (i_ < s_.size()) {
            char c = s_[i_++];
            if (c == '"') return out;
            if (c != '\\') { out += c; continue; }
            if (i_ >= s_.size()) break;
            char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    std::uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
                        i_ += 2;
                        std::uint32_t low = hex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    }
                    utf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
        fail("unterminated string");
    }
};

inline Value parse(const std::string& text) { return Parser(text).parse(); }

// A string as a JSON literal (quotes and escapes), for the one-line report.
inline std::string quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else out += static_cast<char>(c);
    }
    return out + "\"";
}

}  // namespace opticam::json
