package document

import (
	"encoding/base64"
	"math/big"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// numberFits reports whether n (a JSON number, or a string holding one, as protojson allows) is a valid value for
// a field of kind k: an integer in range for the integer kinds, any number (or "NaN", "Infinity", "-Infinity")
// for floating point ones.
func numberFits(k protoreflect.Kind, n *node) bool {
	text := n.str
	if n.kind == kindString {
		if k == protoreflect.FloatKind || k == protoreflect.DoubleKind {
			switch text {
			case "NaN", "Infinity", "-Infinity":
				return true
			}
		}
		if !isJSONNumber(text) {
			return false
		}
	}
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		_, ok := integer(text, 32, false)
		return ok
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		_, ok := integer(text, 32, true)
		return ok
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		_, ok := integer(text, 64, false)
		return ok
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		_, ok := integer(text, 64, true)
		return ok
	}
	return true
}

// integer returns the value of the JSON number text if it is a whole number that fits bits (signed or unsigned).
// "1e2" and "100.0" are whole numbers. Exponents are bounded before any arithmetic, so "1e999999999" costs nothing.
func integer(text string, bits int, unsigned bool) (*big.Int, bool) {
	mantissa, exp, _ := strings.Cut(strings.ToLower(text), "e")
	if exp != "" {
		e, err := strconv.Atoi(exp)
		if err != nil || e > 40 || e < -40 {
			// Far beyond 64 bits, or far below 1 unless the mantissa is zero.
			return new(big.Int), strings.Trim(mantissa, "-+0.") == ""
		}
	}
	r, ok := new(big.Rat).SetString(text)
	if !ok || !r.IsInt() {
		return nil, false
	}
	v := r.Num()
	if unsigned {
		return v, v.Sign() >= 0 && v.BitLen() <= bits
	}
	limit := new(big.Int).Lsh(big.NewInt(1), uint(bits-1)) // 2^(bits-1)
	if v.Sign() < 0 {
		return v, new(big.Int).Neg(v).Cmp(limit) <= 0
	}
	return v, v.Cmp(limit) < 0
}

// isJSONNumber reports whether s is a number in JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch n := digits(); {
	case n == 0, n > 1 && s[i-n] == '0':
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// isBase64 reports whether s is base64 as protojson reads it: standard or URL alphabet, padding optional.
func isBase64(s string) bool {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if len(s)%4 != 0 {
		enc = enc.WithPadding(base64.NoPadding)
	}
	_, err := enc.DecodeString(s)
	return err == nil
}

// checkMapKey returns why key is not a map key of kind k, or "".
func checkMapKey(k protoreflect.Kind, key string) string {
	var err error
	switch k {
	case protoreflect.BoolKind:
		if key != "true" && key != "false" {
			return "must be true or false"
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		_, err = strconv.ParseInt(key, 10, 32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		_, err = strconv.ParseInt(key, 10, 64)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		_, err = strconv.ParseUint(key, 10, 32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		_, err = strconv.ParseUint(key, 10, 64)
	}
	if err != nil {
		return "must be a whole number in range"
	}
	return ""
}
