// The one JSON <-> Value conversion (DESIGN §5). Integers without fraction/exponent that fit
// int64 become INT, other numbers FLOAT; {"$bytes":"<base64>"} is BYTES.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "swipc/error.h"
#include "swipc/value.h"

namespace swipc {

nlohmann::ordered_json toJson(const Value& v);
/// TypeError for JSON that has no Value form (bad base64 in "$bytes").
Result<Value> fromJson(const nlohmann::ordered_json& j);
/// Parses JSON text; TypeError with the parser's message on bad syntax.
Result<Value> parseJsonValue(std::string_view text);
/// Compact single-line JSON text.
std::string toJsonText(const Value& v);

std::string base64Encode(const std::vector<uint8_t>& bytes);
/// False on characters outside the base64 alphabet or bad padding.
bool base64Decode(std::string_view text, std::vector<uint8_t>& out);

}  // namespace swipc
