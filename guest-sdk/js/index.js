/**
 * ferry-sdk: write a Ferry model in JavaScript.
 *
 * A model is a subclass of {@link Model}, the default export of the project's entry module
 * (ferry.toml's `[build] entry`). `ferry build` compiles it with QuickJS into a WebAssembly component
 * that runs under the version's limits, with no filesystem and no network:
 *
 * ```js
 * import { Model, jsonWeights } from 'ferry-sdk';
 *
 * export default class Doubler extends Model {
 *   init(config, weights) {
 *     this.factor = jsonWeights(weights).factor;
 *   }
 *
 *   predict(request) {
 *     const { x } = request.fields('features', { x: Number });
 *     return { y: this.factor * x };
 *   }
 * }
 * ```
 *
 * This module is plain JavaScript with no imports: the same model file imports and runs in Node (for
 * a training script or a unit test). Only `ferry-sdk/component.js`, which `ferry build` puts in front
 * of the model, needs the component's imports.
 *
 * @module ferry-sdk
 */

// ------------------------------------------------------------------------------------------- errors

/**
 * Base of the errors a model throws on purpose. `payload` is the contract's `model-error` value the
 * call fails with. A bare `ModelError` is an internal error (500), reported like any other exception;
 * throw {@link InvalidInput} or {@link Unsupported} to tell the caller what to change.
 */
export class ModelError extends Error {
  /** @param {string} message what went wrong, as the caller will read it */
  constructor(message) {
    super(message);
    this.name = new.target.name;
    /** @type {{tag: 'invalid-input' | 'unsupported' | 'internal', val: string}} */
    this.payload = { tag: new.target.kind, val: String(message) };
  }

  /** The `model-error` case this class fails a call with. */
  static get kind() {
    return 'internal';
  }
}

/** The request is wrong (a missing feature, a bad value): the caller gets 422 with this message. */
export class InvalidInput extends ModelError {
  static get kind() {
    return 'invalid-input';
  }
}

/** The model does not offer what was asked (e.g. tensor `infer` on a JSON-only model): 400. */
export class Unsupported extends ModelError {
  static get kind() {
    return 'unsupported';
  }
}

// ------------------------------------------------------------------------------------------ tensors

/** Open Inference Protocol datatypes the contract carries (FP16 is not). */
export const DATATYPES = Object.freeze([
  'BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64',
  'INT8', 'INT16', 'INT32', 'INT64', 'FP32', 'FP64', 'BYTES',
]);

function checkDatatype(datatype) {
  if (!DATATYPES.includes(datatype)) {
    throw new TypeError(`unknown datatype ${JSON.stringify(datatype)}; one of ${DATATYPES.join(', ')}`);
  }
  return datatype;
}

function checkShape(what, shape, allowAny) {
  if (shape == null || typeof shape[Symbol.iterator] !== 'function') {
    throw new TypeError(`${what}: shape must be an array of integers, got ${_describe(shape)}`);
  }
  const dims = Array.from(shape, Number);
  const bad = dims.find((d) => !Number.isInteger(d) || (allowAny ? d < -1 : d < 0));
  if (bad !== undefined) {
    const rule = allowAny ? 'a dimension below -1' : 'a negative or non-integer dimension';
    throw new RangeError(`${what}: shape [${dims.join(', ')}] has ${rule}`);
  }
  return dims;
}

function product(shape) {
  return shape.reduce((n, d) => n * d, 1);
}

/**
 * A named tensor: `datatype` (an OIP name such as `'FP32'`), `shape` (batch first) and `data`, a flat
 * row-major array (`Uint8Array` values for BYTES). The element count must equal the product of the
 * shape. Typed arrays are accepted and copied into a plain array.
 */
export class Tensor {
  /**
   * @param {string} name
   * @param {string} datatype one of {@link DATATYPES}
   * @param {ArrayLike<number>} shape
   * @param {ArrayLike<any>} data flat, row-major
   */
  constructor(name, datatype, shape, data) {
    this.name = String(name);
    this.datatype = checkDatatype(datatype);
    this.shape = checkShape(`tensor ${JSON.stringify(this.name)}`, shape, false);
    if (data == null || typeof data.length !== 'number' || typeof data === 'string') {
      throw new TypeError(`tensor ${JSON.stringify(this.name)}: data must be an array, got ${_describe(data)}`);
    }
    this.data = Array.isArray(data) ? data.slice() : Array.from(data);
    const n = product(this.shape);
    if (this.data.length !== n) {
      const shape = `[${this.shape.join(', ')}]`;
      throw new RangeError(
        `tensor ${JSON.stringify(this.name)}: shape ${shape} holds ${n} elements, data has ${this.data.length}`,
      );
    }
  }

  /** An FP32 tensor. */
  static fp32(name, shape, data) {
    return new Tensor(name, 'FP32', shape, data);
  }

  /** An FP64 tensor. */
  static fp64(name, shape, data) {
    return new Tensor(name, 'FP64', shape, data);
  }

  /** An INT32 tensor. */
  static int32(name, shape, data) {
    return new Tensor(name, 'INT32', shape, data);
  }

  /**
   * An INT64 tensor. Its elements are JavaScript numbers, exact up to 2^53 in magnitude (the
   * component's bindings carry 64-bit integers as numbers, not BigInt).
   */
  static int64(name, shape, data) {
    return new Tensor(name, 'INT64', shape, data);
  }

  /** A BOOL tensor. */
  static bool(name, shape, data) {
    return new Tensor(name, 'BOOL', shape, data);
  }

  /** A BYTES tensor: each element a `Uint8Array`, or a string (sent as its UTF-8 bytes). */
  static bytes(name, shape, data) {
    return new Tensor(name, 'BYTES', shape, data);
  }

  /** The tensor as rows: `shape[0]` arrays of `product(shape[1:])` elements. */
  rows() {
    if (this.shape.length === 0) {
      throw new RangeError(`tensor ${JSON.stringify(this.name)} is a scalar and has no rows`);
    }
    const width = product(this.shape.slice(1));
    const rows = [];
    for (let i = 0; i < this.shape[0]; i++) rows.push(this.data.slice(i * width, (i + 1) * width));
    return rows;
  }

  /** The number of elements. */
  get length() {
    return this.data.length;
  }

  toString() {
    return `Tensor(${JSON.stringify(this.name)}, ${this.datatype}, [${this.shape.join(', ')}])`;
  }
}

/** A declared input or output: -1 in `shape` accepts any size in that dimension. */
export class TensorSpec {
  /**
   * @param {string} name
   * @param {string} datatype one of {@link DATATYPES}
   * @param {ArrayLike<number>} shape -1 for any size
   */
  constructor(name, datatype, shape) {
    this.name = String(name);
    this.datatype = checkDatatype(datatype);
    this.shape = checkShape(`tensor spec ${JSON.stringify(this.name)}`, shape, true);
  }

  toString() {
    return `TensorSpec(${JSON.stringify(this.name)}, ${this.datatype}, [${this.shape.join(', ')}])`;
  }
}

/**
 * A tensor request's inputs by name, and its `parameters` (the request's JSON `parameters` object).
 * `get(name)` throws {@link InvalidInput} naming an input the request lacks, so the caller gets a 422
 * that says what to send; `has(name)` tests for an optional one.
 */
export class Inputs {
  /**
   * @param {Iterable<Tensor>} tensors
   * @param {object} [parameters]
   */
  constructor(tensors, parameters) {
    /** @private */
    this._tensors = new Map();
    for (const t of tensors) this._tensors.set(t.name, t);
    /** The request's `parameters` object (`{}` when it sent none). */
    this.parameters = parameters ?? {};
  }

  /** Input `name`; throws {@link InvalidInput} when the request has none by that name. */
  get(name) {
    const t = this._tensors.get(name);
    if (t === undefined) {
      const got = [...this._tensors.keys()].map((n) => JSON.stringify(n)).join(', ') || 'none';
      throw new InvalidInput(`missing input ${JSON.stringify(name)} (got ${got})`);
    }
    return t;
  }

  /** Whether the request has input `name`. */
  has(name) {
    return this._tensors.has(name);
  }

  /** The inputs' names, in request order. */
  get names() {
    return [...this._tensors.keys()];
  }

  /** The number of inputs. */
  get size() {
    return this._tensors.size;
  }

  /** The tensors, in request order. */
  [Symbol.iterator]() {
    return this._tensors.values();
  }

  /**
   * Input `name` as rows of exactly `cols` numbers, after checking its datatype and shape
   * ({@link InvalidInput} naming what is wrong otherwise).
   * @param {string} name
   * @param {number} cols
   * @param {string[]} [datatypes] accepted datatypes
   * @returns {number[][]}
   */
  matrix(name, cols, datatypes = ['FP32', 'FP64']) {
    const t = this.get(name);
    if (!datatypes.includes(t.datatype)) {
      throw new InvalidInput(`input ${JSON.stringify(name)}: datatype ${t.datatype}, expected ${datatypes.join(' or ')}`);
    }
    if (t.shape.length !== 2 || t.shape[1] !== cols) {
      throw new InvalidInput(`input ${JSON.stringify(name)}: shape [${t.shape.join(', ')}], expected [N, ${cols}]`);
    }
    return t.rows();
  }
}

// --------------------------------------------------------------------------- requests, metadata

// A field's kind: a constructor (Number, String, Boolean, Array, Object) or a name, 'int' among them
// (JSON has one number type; 'int' refuses 2.5 where Number would take it).
const KINDS = {
  number: {
    expected: 'a number',
    convert: (v) => (typeof v === 'number' && Number.isFinite(v) ? v : fail()),
  },
  int: {
    expected: 'an integer',
    convert: (v) => (Number.isInteger(v) ? v : fail()),
  },
  string: { expected: 'a string', convert: (v) => (typeof v === 'string' ? v : fail()) },
  boolean: { expected: 'true or false', convert: (v) => (typeof v === 'boolean' ? v : fail()) },
  array: { expected: 'an array', convert: (v) => (Array.isArray(v) ? v : fail()) },
  object: { expected: 'an object', convert: (v) => (isObject(v) ? v : fail()) },
};
const KIND_ALIASES = new Map([
  [Number, 'number'], ['number', 'number'], ['float', 'number'],
  ['int', 'int'], ['integer', 'int'],
  [String, 'string'], ['string', 'string'],
  [Boolean, 'boolean'], ['boolean', 'boolean'], ['bool', 'boolean'],
  [Array, 'array'], ['array', 'array'],
  [Object, 'object'], ['object', 'object'],
]);

class WrongKind extends Error {}

function fail() {
  throw new WrongKind();
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function kindOf(kind, name) {
  const known = KIND_ALIASES.get(kind);
  if (known) return KINDS[known];
  if (typeof kind === 'function') {
    // A converter: its return value is the field's; anything it throws (other than a ModelError,
    // which passes through with its own message) says the value is wrong.
    return { expected: kind.name ? `a valid ${kind.name}` : 'a valid value', convert: kind };
  }
  throw new TypeError(
    `field ${JSON.stringify(name)}: unknown kind ${_describe(kind)}; ` +
      "use Number, 'int', String, Boolean, Array, Object or a function",
  );
}

function jsonText(value) {
  return value === undefined ? 'null' : JSON.stringify(value);
}

/**
 * A feature-style request: `body` is the JSON value the caller sent (usually an object).
 */
export class Request {
  /** @param {any} body the parsed request */
  constructor(body) {
    this.body = body;
  }

  /** `body[key]` when the body is an object, else `undefined`. */
  get(key) {
    return isObject(this.body) ? this.body[key] : undefined;
  }

  /**
   * Reads named fields, each checked against its kind, from `body[key]` (or from the body itself when
   * `key` is left out).
   *
   * `request.fields('features', { distance_km: Number, hour: 'int' })` returns
   * `{ distance_km, hour }`; a missing field or a value of the wrong kind throws {@link InvalidInput}
   * naming it (`features.hour: missing`, `features.distance_km: expected a number, got "3"`), so the
   * caller gets a 422 that says what to fix. Kinds: `Number` (finite), `'int'`, `String`, `Boolean`,
   * `Array`, `Object`, or a function that converts the value (and throws when it cannot).
   *
   * @param {string | Object<string, any>} key the object to read from, or the kinds (read the body)
   * @param {Object<string, any>} [kinds] field name → kind
   * @returns {Object<string, any>}
   */
  fields(key, kinds) {
    if (kinds === undefined && key !== null && typeof key === 'object') {
      kinds = key;
      key = undefined;
    }
    if (key === null) key = undefined;
    const where = key ?? 'request';
    const obj = key === undefined ? this.body : this.get(key);
    if (!isObject(obj)) {
      throw new InvalidInput(`${where}: expected a JSON object, got ${jsonText(obj)}`);
    }
    const out = {};
    for (const [name, kind] of Object.entries(kinds)) {
      const k = kindOf(kind, name);
      if (!Object.prototype.hasOwnProperty.call(obj, name)) {
        throw new InvalidInput(`${where}.${name}: missing`);
      }
      try {
        out[name] = k.convert(obj[name]);
      } catch (e) {
        if (e instanceof ModelError) throw e;
        throw new InvalidInput(`${where}.${name}: expected ${k.expected}, got ${jsonText(obj[name])}`);
      }
    }
    return out;
  }
}

/**
 * What a model declares: its platform (e.g. `'linear-regression'`), a description, and its tensor
 * inputs and outputs (the host checks tensor requests against them before calling `infer`).
 * `predictsJson` defaults to whether the model class defines `predict`.
 */
export class Metadata {
  /**
   * @param {string} [platform]
   * @param {object} [options]
   * @param {string} [options.description]
   * @param {TensorSpec[]} [options.inputs]
   * @param {TensorSpec[]} [options.outputs]
   * @param {boolean} [options.predictsJson] whether the model answers `predict` (default: it defines one)
   */
  constructor(platform = 'javascript', { description = '', inputs = [], outputs = [], predictsJson } = {}) {
    this.platform = String(platform);
    this.description = String(description);
    this.inputs = [...inputs];
    this.outputs = [...outputs];
    this.predictsJson = predictsJson;
  }
}

// ----------------------------------------------------------------------------------- self-tests

/**
 * Self-tests compiled into the component, run by the host on every load; a failing case keeps the
 * version from serving. Cases whose expectations depend on retrained weights belong in the tests file
 * the training script writes beside the weights, not here.
 */
export class SelfTests {
  constructor() {
    /** @type {{kind: 'predict' | 'infer', name: string, input: any, expected: any, tolerance: number}[]} */
    this.cases = [];
    /** @type {string[]} */
    this.documents = [];
  }

  /** The model's `predict` must answer `request` with `expected` (numbers within `tolerance`). */
  predict(name, request, expected, tolerance = 1e-9) {
    this.cases.push({
      kind: 'predict', name: String(name), input: request, expected, tolerance: Number(tolerance),
    });
    return this;
  }

  /** The model's `infer` must answer `inputs` with `expected` tensors. */
  infer(name, inputs, expected, tolerance = 1e-6) {
    this.cases.push({
      kind: 'infer', name: String(name), input: [...inputs], expected: [...expected], tolerance: Number(tolerance),
    });
    return this;
  }

  /** A whole tests document (the tests-file format, as text or an object). */
  document(tests) {
    this.documents.push(typeof tests === 'string' ? tests : JSON.stringify(tests));
    return this;
  }
}

// --------------------------------------------------------------------------------------- model

/**
 * UTF-8 bytes → string, refusing malformed input. QuickJS in a component has no TextDecoder, so this
 * is the decoder there; where TextDecoder exists (Node) it is used.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function utf8Decode(bytes) {
  if (typeof TextDecoder === 'function') return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  let i = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const parts = [];
  let units = [];
  const flush = () => {
    parts.push(String.fromCharCode.apply(null, units));
    units = [];
  };
  const bad = (at) => {
    throw new TypeError(`invalid UTF-8 at byte ${at}`);
  };
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      // A run of ASCII (most of a JSON weights file) converts in one call.
      let j = i + 1;
      while (j < bytes.length && bytes[j] < 0x80 && j - i < 8192) j++;
      flush();
      parts.push(String.fromCharCode.apply(null, bytes.subarray ? bytes.subarray(i, j) : bytes.slice(i, j)));
      i = j;
      continue;
    }
    let cp;
    let need;
    if (b >= 0xc2 && b <= 0xdf) {
      cp = b & 0x1f;
      need = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
      cp = b & 0x0f;
      need = 2;
    } else if (b >= 0xf0 && b <= 0xf4) {
      cp = b & 0x07;
      need = 3;
    } else {
      bad(i);
    }
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k]; // undefined past the end: a truncated sequence
      if (c === undefined || (c & 0xc0) !== 0x80) bad(i);
      cp = (cp << 6) | (c & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if (need === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) bad(i);
    if (need === 3 && (cp < 0x10000 || cp > 0x10ffff)) bad(i);
    i += need + 1;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else {
      units.push(cp);
    }
    if (units.length >= 8192) flush();
  }
  flush();
  return parts.join('');
}

/**
 * String → UTF-8 bytes (a lone surrogate becomes U+FFFD, as TextEncoder does).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function utf8Encode(text) {
  if (typeof TextEncoder === 'function') return new TextEncoder().encode(text);
  const out = [];
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const lo = text.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return new Uint8Array(out);
}

/**
 * The version's weights parsed as JSON, with an error that says what is missing or wrong.
 * @param {Uint8Array | null | undefined} weights `init`'s weights
 * @returns {any}
 */
export function jsonWeights(weights) {
  if (weights == null) {
    throw new Error(
      "this model loads its weights from the version's weights file, and the version has none: name it " +
        'in ferry.toml ([version] weights = "weights.json") or pass --weights FILE',
    );
  }
  let text;
  try {
    text = typeof weights === 'string' ? weights : utf8Decode(weights);
  } catch (e) {
    throw new Error(`the weights file is not JSON: it is not UTF-8 text (${e.message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`the weights file is not JSON: ${e.message}`);
  }
}

/**
 * Subclass this, and make the subclass the entry module's default export. Override `init` and at
 * least one of `predict` / `infer`.
 *
 * The host creates the model once per instance and reuses it for many requests, so do the expensive
 * work (parsing weights) in `init`; `predict` and `infer` must not change state that the next request
 * would see. Methods are synchronous: the component has no event loop to finish a Promise.
 */
export class Model {
  /**
   * Called once per instance: `config` is the version's config (`{}` without one), `weights` its
   * weights blob (`null` without one).
   * @param {any} config
   * @param {Uint8Array | null} weights
   */
  // eslint-disable-next-line no-unused-vars
  init(config, weights) {}

  /** What the model takes and returns. @returns {Metadata} */
  metadata() {
    return new Metadata();
  }

  /**
   * Feature-style prediction: the caller's JSON in (`request.body`, `request.fields(…)`), any
   * JSON-serialisable value out.
   * @param {Request} request
   * @returns {any}
   */
  // eslint-disable-next-line no-unused-vars
  predict(request) {
    throw new Unsupported('this model answers tensor `infer` requests, not feature-style `predict`');
  }

  /**
   * Tensor inference (Open Inference Protocol): the request's tensors in, output tensors out.
   * @param {Inputs} inputs
   * @returns {Tensor[]}
   */
  // eslint-disable-next-line no-unused-vars
  infer(inputs) {
    throw new Unsupported('this model answers feature-style `predict` requests, not tensor `infer`');
  }

  /** Self-tests compiled into the component (none by default). @returns {SelfTests} */
  selfTests() {
    return new SelfTests();
  }
}

// ----------------------------------------------------------------------------------------- log

/**
 * `log.info('…')` and friends: into the host's log (capped per call) inside a component; to stderr
 * (console.error) elsewhere. The methods do not need `this`, so `const { info } = log` works.
 */
export const log = {
  /** Where messages go; `ferry-sdk/component.js` points it at the host. @private */
  _sink(level, message) {
    if (typeof console !== 'undefined') console.error(`[${level}] ${message}`);
  },
  /** @param {string} message */
  debug(message) {
    log._sink('debug', String(message));
  },
  /** @param {string} message */
  info(message) {
    log._sink('info', String(message));
  },
  /** @param {string} message */
  warn(message) {
    log._sink('warn', String(message));
  },
  /** @param {string} message */
  error(message) {
    log._sink('error', String(message));
  },
};

// ------------------------------------------------------------------------------------- helpers

/** A short description of a value for error messages (not API: `component.js` shares it). @private */
export function _describe(value) {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'function') {
    const kind = /^class\b/.test(Function.prototype.toString.call(value)) ? 'class' : 'function';
    return `${kind} ${value.name || '(anonymous)'}`;
  }
  if (Array.isArray(value)) return `an array of ${value.length}`;
  const ctor = value.constructor && value.constructor.name;
  return ctor && ctor !== 'Object' ? `a ${ctor}` : 'an object';
}
