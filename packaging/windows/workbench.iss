; Inno Setup 6 script: the Windows installer for Workbench (per user, no admin rights).
;
;   python packaging\render_icons.py build\icons
;   python -m PyInstaller packaging\workbench.spec --noconfirm --distpath dist --workpath build\pyinstaller
;   iscc /DAppVersion=0.1.0 /DFlavor=cpu packaging\windows\workbench.iss
;
; -> dist\Workbench-<version>-windows-x64-<flavor>-setup.exe. Flavor names the llama.cpp
; backend the bundle was built with (cpu, cuda, vulkan: see the README's "GPU builds");
; every flavor has the same AppId, so installing another one replaces the one installed.
; .github/workflows/installers.yml runs exactly these steps.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Flavor
  #define Flavor "cpu"
#endif
#define Root AddBackslash(SourcePath) + "..\.."
#ifndef BundleDir
  #define BundleDir Root + "\dist\workbench"
#endif

[Setup]
; Fixed for the life of the product: Windows finds an installed Workbench by it (upgrades,
; the uninstaller, Settings > Apps). Never change it.
AppId={{634ACFE6-791A-45F7-8CDA-4696CA3F5924}
AppName=Workbench
AppVersion={#AppVersion}
AppVerName=Workbench {#AppVersion} ({#Flavor})
AppPublisher=The Workbench developers
; Per-user install: no UAC prompt. {autopf} is %LOCALAPPDATA%\Programs here.
PrivilegesRequired=lowest
DefaultDirName={autopf}\Workbench
DisableDirPage=auto
DefaultGroupName=Workbench
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#Root}\dist
OutputBaseFilename=Workbench-{#AppVersion}-windows-x64-{#Flavor}-setup
SetupIconFile={#Root}\build\icons\workbench.ico
UninstallDisplayIcon={app}\workbench.exe
UninstallDisplayName=Workbench
; The built-in model (94 MiB) is already quantized; LZMA2 still shrinks the rest well.
Compression=lzma2/max
SolidCompression=yes
LZMANumBlockThreads=4
WizardStyle=modern
; Close a running Workbench (and its engine process) before files are replaced.
CloseApplications=yes
RestartApplications=no

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; \
    GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
; The whole PyInstaller onedir bundle: workbench.exe and _internal\ (Python, Qt,
; llama.cpp's DLLs, the built-in model).
Source: "{#BundleDir}\*"; DestDir: "{app}"; \
    Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; A previous version's bundle, so that no stale DLL or module is left beside the new ones.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
; Start menu entry ({autoprograms} is the user's Start menu here) and an optional desktop one.
Name: "{autoprograms}\Workbench"; Filename: "{app}\workbench.exe"; \
    Comment: "Run, tune and understand local language models"
Name: "{autodesktop}\Workbench"; Filename: "{app}\workbench.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\workbench.exe"; Description: "{cm:LaunchProgram,Workbench}"; \
    Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Files the app writes next to itself (none today; Python may leave caches). The user's
; conversations, settings and downloaded models live in %LOCALAPPDATA%\Workbench and the
; Hugging Face cache, and are kept.
Type: filesandordirs; Name: "{app}\_internal"
