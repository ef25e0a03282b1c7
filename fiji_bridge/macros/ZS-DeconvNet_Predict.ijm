// ZS-DeconvNet Predict: restore an image with a zsdeconvnet model (ONNX).
// Installed by `zsdeconvnet fiji install`; the model runs outside Java (no TensorFlow in Fiji).
//
// From a macro (no dialog is shown when options are given):
//   run("ZS-DeconvNet Predict", "model=[/data/cell.onnx] input=[/data/cell.tif] output=[/data/cell_sr.tif]");
// Options: model, input (empty = the active image), output (empty = <input>_deconvolved.tif),
//   denoised (optional path), tile (px, default 512), route (auto | server | exec), open (yes | no).
// route=auto uses a running `zsdeconvnet serve` when there is one, else starts the command.

python = "@PYTHON@";
serverInfo = "@SERVER_INFO@";

Dialog.create("ZS-DeconvNet Predict");
Dialog.addString("model", "", 60);
Dialog.addString("input", "", 60);
Dialog.addString("output", "", 60);
Dialog.addString("denoised", "", 60);
Dialog.addNumber("tile", 512);
Dialog.addChoice("route", newArray("auto", "server", "exec"), "auto");
Dialog.addChoice("open", newArray("yes", "no"), "yes");
Dialog.show();
model = Dialog.getString();
input = Dialog.getString();
output = Dialog.getString();
denoised = Dialog.getString();
tile = Dialog.getNumber();
route = Dialog.getChoice();
openResult = Dialog.getChoice();

if (model == "") fail("no model given (model=[path/to/model.onnx])");
if (input == "") input = saveActiveImage();
if (output == "") output = File.getParent(input) + File.separator + stripTiff(File.getName(input)) + "_deconvolved.tif";

useServer = false;
if (route != "exec" && File.exists(serverInfo)) useServer = true;
if (route == "server" && !useServer) fail("no zsdeconvnet server is running (start one with: zsdeconvnet serve --root DIR)");

if (useServer) {
    info = File.openAsString(serverInfo);
    url = "http://127.0.0.1:" + jsonValue(info, "port") + "/predict?token=" + jsonValue(info, "token");
    url = url + "&model=" + enc(model) + "&input=" + enc(input) + "&output=" + enc(output);
    url = url + "&tile=" + tile + "&overwrite=1";
    if (denoised != "") url = url + "&denoised=" + enc(denoised);
    answer = File.openUrlAsString(url);
    if (indexOf(answer, "\"ok\": true") < 0) fail(jsonValue(answer, "error") + " " + answer);
} else {
    if (denoised == "")
        answer = exec(python, "-m", "zsdeconvnet", "--errors-to-stdout", "predict", model, input, "-o", output, "--tile", "" + tile, "--overwrite", "--quiet");
    else
        answer = exec(python, "-m", "zsdeconvnet", "--errors-to-stdout", "predict", model, input, "-o", output, "--denoised", denoised, "--tile", "" + tile, "--overwrite", "--quiet");
    if (indexOf(answer, "Error:") >= 0) fail(substring(answer, indexOf(answer, "Error:")));
    if (!File.exists(output)) fail("no output was written: " + answer);
}
if (openResult == "yes") {
    open(output);
    if (denoised != "") open(denoised);
}

function fail(message) {
    if (is("Batch Mode")) { print("ZS-DeconvNet Predict failed: " + message); exit; }
    exit("ZS-DeconvNet Predict failed:\n" + message);
}

function stripTiff(name) {
    lower = toLowerCase(name);
    if (endsWith(lower, ".tiff")) return substring(name, 0, lengthOf(name) - 5);
    if (endsWith(lower, ".tif")) return substring(name, 0, lengthOf(name) - 4);
    return name;
}

function saveActiveImage() {
    if (nImages == 0) fail("no input given and no image is open");
    title = getTitle();
    path = getDirectory("temp") + "zsdeconvnet_" + getTime() + ".tif";
    run("Duplicate...", "title=zsdeconvnet_input duplicate");
    saveAs("Tiff", path);
    close();
    selectWindow(title);
    return path;
}

function enc(text) {
    return call("java.net.URLEncoder.encode", text, "UTF-8");
}

function jsonValue(json, key) {
    start = indexOf(json, "\"" + key + "\":");
    if (start < 0) return "";
    rest = String.trim(substring(json, start + lengthOf(key) + 3));
    if (startsWith(rest, "\"")) {
        rest = substring(rest, 1);
        return substring(rest, 0, indexOf(rest, "\""));
    }
    end = indexOf(rest, ",");
    if (end < 0) end = indexOf(rest, "}");
    return String.trim(substring(rest, 0, end));
}
