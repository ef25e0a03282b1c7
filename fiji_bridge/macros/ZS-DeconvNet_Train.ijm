// ZS-DeconvNet Train: zero-shot training on an image and its PSF, exports an ONNX model.
// Installed by `zsdeconvnet fiji install`. Training runs in a separate process (PyTorch never
// enters Fiji); it can take minutes (CPU) and the macro waits for it.
//
//   run("ZS-DeconvNet Train", "input=[/data/cell.tif] psf=[/data/psf.tif] model=[/data/cell.onnx] iterations=2000 preset=fast");
// Options: input (empty = the active image), psf, model, iterations, preset (fast | paper),
//   device (cpu | cuda), open (yes | no: open the training preview when done).

python = "@PYTHON@";

Dialog.create("ZS-DeconvNet Train");
Dialog.addString("input", "", 60);
Dialog.addString("psf", "", 60);
Dialog.addString("model", "", 60);
Dialog.addNumber("iterations", 2000);
Dialog.addChoice("preset", newArray("fast", "paper"), "fast");
Dialog.addChoice("device", newArray("cpu", "cuda"), "cpu");
Dialog.addChoice("open", newArray("yes", "no"), "yes");
Dialog.show();
input = Dialog.getString();
psf = Dialog.getString();
model = Dialog.getString();
iterations = Dialog.getNumber();
preset = Dialog.getChoice();
device = Dialog.getChoice();
openResult = Dialog.getChoice();

if (psf == "" || model == "") fail("give psf=[...] and model=[...]");
if (input == "") {
    if (nImages == 0) fail("no input given and no image is open");
    input = getDirectory("temp") + "zsdeconvnet_train_" + getTime() + ".tif";
    run("Duplicate...", "title=zsdeconvnet_input duplicate");
    saveAs("Tiff", input);
    close();
}
answer = exec(python, "-m", "zsdeconvnet", "--errors-to-stdout", "train", input, "--psf", psf, "-o", model, "--iterations", "" + iterations, "--preset", preset, "--device", device, "--overwrite", "--quiet");
if (indexOf(answer, "Error:") >= 0) fail(substring(answer, indexOf(answer, "Error:")));
if (!File.exists(model)) fail("no model was written: " + answer);
preview = File.getParent(model) + File.separator + replace(File.getName(model), ".onnx", "") + "_training" + File.separator + "preview.png";
if (openResult == "yes" && File.exists(preview)) open(preview);
print("ZS-DeconvNet Train: wrote " + model);

function fail(message) {
    if (is("Batch Mode")) { print("ZS-DeconvNet Train failed: " + message); exit; }
    exit("ZS-DeconvNet Train failed:\n" + message);
}
